"""Wiring of the reward side: verifier engine actors and the reward actor pool.

`make_reward_pool(config)` starts `verifier_workers` `VerifierWorker` actors (each hosting the
frozen verifier's engine; restarted by Ray if they die) and a `RewardPool` of `RewardWorker`
actors that call them through a `VerifierClient`. Resources come from config. The train job and
`bench/rewards.py` use it; `ray.init` is the caller's.
"""

from __future__ import annotations

from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field

from actors.actor_pool import PoolConfig
from actors.reward_worker import RewardPool, RewardWorker
from actors.verifier import VerifierClient, VerifierConfig, VerifierWorker
from core.prompts import DEFAULT_PROMPTS
from jobs.rollout import WorkerResources
from rewards.registry import RewardConfig, check_components


class RewardPoolConfig(BaseModel):
    """The reward components, the verifier, and the actors that run them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rewards: RewardConfig = RewardConfig()
    """Components, weights and their settings."""
    verifier: VerifierConfig | None = None
    """The frozen verifier VLM; None scores `region` as failed (drop it from the weights)."""
    verifier_workers: int = Field(1, ge=1)
    """Verifier engine actors (one GPU each on clusters; a large model may take several)."""
    verifier_resources: WorkerResources = WorkerResources()
    """Ray resources per verifier actor."""
    verifier_max_restarts: int = Field(1, ge=0)
    """Times Ray restarts a dead verifier actor (its engine reloads the frozen weights)."""
    pool: PoolConfig = PoolConfig(min_workers=2, max_workers=2, chunk_size=16)
    """Reward actors, dispatch and scaling."""
    resources: WorkerResources = WorkerResources(num_cpus=0.25)
    """Ray resources per reward actor (rule scoring is light)."""
    prompts: str = str(DEFAULT_PROMPTS)
    """Prompt templates TOML (its `verifier` template)."""


def make_verifiers(config: RewardPoolConfig) -> list[Any]:
    """Start the verifier actors; empty without a verifier."""
    if config.verifier is None:
        return []
    verifier = config.verifier
    options = config.verifier_resources.actor_options(config.verifier_max_restarts)
    actor = ray.remote(VerifierWorker).options(**options)
    return [
        actor.remote(verifier.engine, verifier.max_new_tokens, config.prompts)
        for _ in range(config.verifier_workers)
    ]


def make_reward_pool(config: RewardPoolConfig, verifiers: list[Any]) -> RewardPool:
    """A pool of reward actors, each calling `verifiers` through its own client."""
    check_components(config.rewards)
    actor = ray.remote(RewardWorker).options(**config.resources.actor_options())
    client = None
    if verifiers and config.verifier is not None:
        verifier = config.verifier
        client = VerifierClient(
            verifiers, verifier.timeout_s, verifier.max_attempts, verifier.restart_timeout_s
        )

    def factory() -> Any:
        return actor.remote(config.rewards, client)

    return RewardPool(factory, config.pool, config.resources.bundle(), config.rewards)
