"""The rollout pool: rollout workers (Ray actors) in an `ActorPool`, plus the weights they serve.

`run` spreads samples over the workers and returns the episode's `group_size` trajectories per
sample, in order: the pool's own episode (training's), or another one on the same engines
(validation's greedy episode, an evaluation's mode and cap). Every new worker (a scale-up or a
replacement) first loads the current weights, then takes work. A chunk that keeps failing
yields trajectories marked failed, so a step never silently loses samples. A worker whose load
fails counts as a failed start and is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ray
import torch

from actors.actor_pool import ActorFactory, ActorPool, PoolConfig
from actors.episode import EpisodeConfig
from actors.rollout_worker import EpisodeRequest
from core.sample import Sample
from core.sharded_weights import to_wire
from core.trajectory import Trajectory, failed_trajectories

__all__ = ["PoolConfig", "RolloutPool"]


class RolloutPool(ActorPool):
    """`RolloutWorker` actors; `run` turns samples into trajectories in order."""

    def __init__(
        self,
        factory: ActorFactory,
        config: PoolConfig,
        worker_resources: dict[str, float],
        episode: EpisodeConfig,
        name: str = "pool",
    ) -> None:
        self.episode = episode
        self.weights: tuple[int, Any] | None = None  # (version, what publish_weights got)
        super().__init__(
            factory, config, worker_resources, lambda actor, chunk: actor.run.remote(chunk), name
        )

    def update_weights(self, version: int, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Put the weights in the object store once; every worker (and later ones) loads them."""
        self.publish_weights(version, ray.put([(n, to_wire(t)) for n, t in named]))

    def publish_weights(self, version: int, weights: Any, wait: bool = True) -> None:
        """Serve `weights` from every worker (starting ones included): a `SharedWeights` file or
        `ShardedWeights`, as the learner group's `export_weights` gives them (no copy through
        the driver), or an ObjectRef of [(name, array)]. `wait=False` returns at once: each
        worker loads them after the chunks it holds, which finish on (and are labelled with) the
        version they began with, and before any chunk sent later; call `settle()` before
        reusing what `weights` refers to."""
        with self._lock:
            self.weights = (version, weights)
            self.broadcast(
                lambda actor: actor.update_weights.remote(version, weights),
                "update_weights",
                wait=False,
            )
        if wait:
            self.settle()

    @property
    def version(self) -> int:
        """The weight version the workers serve (0 before any publish)."""
        return self.weights[0] if self.weights else 0

    def run(
        self,
        samples: list[Sample],
        episode: EpisodeConfig | None = None,
        on_result: Callable[[int, list[Trajectory]], None] | None = None,
    ) -> list[Trajectory]:
        """`episode.group_size` trajectories per sample, in sample order (default: the pool's
        episode); a chunk that keeps failing yields trajectories marked failed. `on_result`
        sees each chunk's trajectories as soon as they are in (see `ActorPool.map`)."""
        episode = episode or self.episode
        version = self.version
        return self.map(
            [EpisodeRequest(s, episode) for s in samples],
            lambda chunk, why: failed_trajectories(
                [r.sample for r in chunk], episode.group_size, version, why
            ),
            on_result,
        )

    def _start(self, handle: Any) -> Any:
        """Load the current weights first: the load's answer is the readiness probe, so a
        worker whose load fails never takes work (it is replaced)."""
        if self.weights is None:
            return handle.ready.remote()
        return handle.update_weights.remote(*self.weights)
