"""Wiring of the reward side: verifier engine actors and the reward actor pool.

`make_verifiers(config)` starts `verifier.workers` `VerifierWorker` actors (each hosting the
frozen verifier's engine; restarted by Ray if they die) and `make_reward_pool` a `RewardPool` of
`RewardWorker` actors that call them through a `VerifierClient`. Resources come from config.
The train job and `bench/reward_pool.py` use it; `ray.init` is the caller's.
"""

from __future__ import annotations

from typing import Any

import ray
from pydantic import Field

from actors.actor_pool import PoolConfig
from actors.resources import WorkerResources
from actors.reward_worker import RewardPool, RewardWorker
from actors.verifier import VerifierClient, VerifierConfig, VerifierWorker
from core.prompts import DEFAULT_PROMPTS, PromptsPath
from rewards.registry import RewardConfig


class VerifierGroupConfig(VerifierConfig):
    """The frozen verifier and the actors that host it: `[rewards.verifier]`."""

    workers: int = Field(1, ge=1)
    """Verifier engine actors (one GPU each on clusters; a large model may take several)."""
    resources: WorkerResources = WorkerResources()
    """Ray resources per verifier actor."""
    max_restarts: int = Field(1, ge=0)
    """Times Ray restarts a dead verifier actor (its engine reloads the frozen weights)."""


class RewardPoolConfig(RewardConfig):
    """The reward components (`weights` and their settings, from `RewardConfig`), the verifier,
    and the actors that run them: `[rewards]`."""

    verifier: VerifierGroupConfig | None = None
    """The frozen verifier VLM; None scores `region` as failed (drop it from the weights)."""
    pool: PoolConfig = PoolConfig(min_workers=2, max_workers=2, chunk_size=16)
    """Reward actors, dispatch and scaling."""
    resources: WorkerResources = WorkerResources(num_cpus=0.25)
    """Ray resources per reward actor (rule scoring is light)."""
    prompts: PromptsPath = str(DEFAULT_PROMPTS)
    """Prompt templates TOML (its `verifier` template); checked when the config is validated."""


def make_verifiers(config: RewardPoolConfig) -> list[Any]:
    """Start the verifier actors; empty without a verifier."""
    verifier = config.verifier
    if verifier is None:
        return []
    actor = ray.remote(VerifierWorker).options(
        **verifier.resources.actor_options(verifier.max_restarts)
    )
    return [
        actor.remote(verifier.engine, verifier.max_new_tokens, config.prompts)
        for _ in range(verifier.workers)
    ]


def make_reward_pool(config: RewardPoolConfig, verifiers: list[Any]) -> RewardPool:
    """A pool of reward actors, each calling `verifiers` through its own client."""
    actor = ray.remote(RewardWorker).options(**config.resources.actor_options())
    client = None
    if verifiers and config.verifier is not None:
        verifier = config.verifier
        client = VerifierClient(
            verifiers, verifier.timeout_s, verifier.max_attempts, verifier.restart_timeout_s
        )

    def factory() -> Any:
        return actor.remote(config, client)

    return RewardPool(factory, config.pool, config.resources.bundle(), config)
