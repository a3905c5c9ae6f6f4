"""Reward actors: rule components in-process, region verification through the verifier (its
answers collected when the rollout worker asked early, while stage 2 generated; else asked).

`RewardWorker` is a plain class (`jobs/` wraps it with `ray.remote`); `RewardPool` is an
`ActorPool` of them that scores a step's trajectories and returns one `RewardResult` per
trajectory, in order. A chunk whose reward actor keeps dying comes back with every component
marked failed, so the step still has a result for every trajectory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from actors.actor_pool import ActorFactory, ActorPool, PoolConfig
from actors.verifier import VerifierClient
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
        verdicts, waits, again = self._verify(trajectories)
        return [
            replace(
                score_trajectory(t, v, self.config),
                verifier_s=v.seconds if v else 0.0,
                verifier_wait_s=wait,
                verifier_asked_again=i in again,
            )
            for i, (t, v, wait) in enumerate(zip(trajectories, verdicts, waits, strict=True))
        ]

    def shutdown(self) -> None:
        """Nothing to release: the verifier actors are shared and outlive this one."""

    def _verify(
        self, trajectories: list[Trajectory]
    ) -> tuple[list[VerifierAnswer | None], list[float], set[int]]:
        """The verifier's answer for every trajectory that chose a region (collected when its
        rollout worker asked early, else asked now, in one batch), each one's share of the
        time this actor waited for them, and which early queries were asked again."""
        answers: list[VerifierAnswer | None] = [None] * len(trajectories)
        waits = [0.0] * len(trajectories)
        verifier = self.verifier
        if "region" not in self.config.weights or verifier is None:
            return answers, waits, set()
        queries = [query_for(t) for t in trajectories]
        early: list[int] = []
        if isinstance(verifier, VerifierClient):
            early = [i for i, q in enumerate(queries) if q and trajectories[i].early_query]
            asked = [trajectories[i].early_query for i in early]
            _timed(early, lambda: verifier.collect(asked), answers, waits)
        late = [(i, q) for i, q in enumerate(queries) if q is not None and answers[i] is None]
        ask = [q for _, q in late]
        _timed([i for i, _ in late], lambda: verifier.answer(ask), answers, waits)
        return answers, waits, {i for i, _ in late} & set(early)


def _timed(
    indices: list[int],
    get: Callable[[], Sequence[VerifierAnswer | None]],
    answers: list[VerifierAnswer | None],
    waits: list[float],
) -> None:
    """Put `get()`'s answers at `indices`, and share the time it took among them."""
    if not indices:
        return
    start = time.perf_counter()
    got = get()
    if len(got) != len(indices):
        raise ValueError(f"the verifier gave {len(got)} answers to {len(indices)} queries")
    share = (time.perf_counter() - start) / len(indices)
    for i, answer in zip(indices, got, strict=True):
        answers[i] = answer
        waits[i] += share


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
