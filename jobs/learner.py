"""Wiring of the learner group: `LearnerWorker` as Ray actors with resources from config.

Each rank is one actor (one GPU on clusters, a fraction of a CPU here); rank 0 picks the
rendezvous address on its node and the others join it. `ray.init` is the caller's.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.resources import WorkerResources
from learners.config import LearnerConfig
from learners.group import LearnerGroup
from learners.weight_export import WeightTransport
from learners.worker import LearnerWorker


def make_learner_group(
    config: LearnerConfig,
    world_size: int,
    resources: WorkerResources,
    transport: WeightTransport = "auto",
    timeout_s: float = 1800.0,
) -> LearnerGroup:
    actor = ray.remote(LearnerWorker).options(**resources.actor_options())

    def factory(rank: int, size: int) -> Any:
        return actor.remote(config, rank, size)

    return LearnerGroup(factory, world_size, transport, timeout_s)
