"""Reward actors: rule components in-process, region verification through the verifier.

`RewardWorker` is a plain class (`jobs/` wraps it with `ray.remote`); `RewardPool` is an
`ActorPool` of them that scores a step's trajectories and returns one `RewardResult` per
trajectory, in order. A chunk whose reward actor keeps dying comes back with every component
marked failed, so the step still has a result for every trajectory.
"""

from __future__ import annotations

from typing import Any

from actors.actor_pool import ActorFactory, ActorPool, PoolConfig
from core.trajectory import Trajectory
from rewards.registry import RewardConfig, RewardResult, check_components, score_trajectory
from rewards.score import Score
from rewards.verifier import Verifier, VerifierAnswer, query_for


class RewardWorker:
    """Scores batches of trajectories with every component in `config.weights`."""

    def __init__(self, config: RewardConfig, verifier: Verifier | None = None) -> None:
        check_components(config)
        self.config = config
        self.verifier = verifier

    def ready(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        """Rule scoring holds no engine; the verifier actors answer for their own health."""
        return {}

    def score(self, trajectories: list[Trajectory]) -> list[RewardResult]:
        verdicts = self._verify(trajectories)
        return [
            score_trajectory(t, v, self.config) for t, v in zip(trajectories, verdicts, strict=True)
        ]

    def shutdown(self) -> None:
        """Nothing to release: the verifier actors are shared and outlive this one."""

    def _verify(self, trajectories: list[Trajectory]) -> list[VerifierAnswer | None]:
        """One batched verifier call for every trajectory that chose a region."""
        if "region" not in self.config.weights or self.verifier is None:
            return [None] * len(trajectories)
        queries = [query_for(t) for t in trajectories]
        asked = [q for q in queries if q is not None]
        answers = self.verifier.answer(asked)
        if len(answers) != len(asked):
            raise ValueError(f"the verifier gave {len(answers)} answers to {len(asked)} queries")
        replies = iter(answers)
        return [next(replies) if q is not None else None for q in queries]


class RewardPool(ActorPool):
    """`RewardWorker` actors; `score` returns every trajectory's components in order."""

    def __init__(
        self,
        factory: ActorFactory,
        config: PoolConfig,
        worker_resources: dict[str, float],
        rewards: RewardConfig,
    ) -> None:
        self.rewards = rewards
        super().__init__(
            factory,
            config,
            worker_resources,
            lambda actor, chunk: actor.score.remote(chunk),
            "reward_pool",
        )

    def score(self, trajectories: list[Trajectory]) -> list[RewardResult]:
        names = list(self.rewards.weights)

        def failed(chunk: list[Any], reason: str) -> list[RewardResult]:
            score = Score.fail(f"reward actor: {reason}")
            return [RewardResult(dict.fromkeys(names, score), 0.0) for _ in chunk]

        return self.map(trajectories, failed)
