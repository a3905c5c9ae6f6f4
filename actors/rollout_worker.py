"""A rollout worker: one engine, the episode runner, and the weights it serves.

A plain class; `jobs/` (or a pool built there) wraps it with `ray.remote` and the resources from
config (one GPU each on clusters, a fraction of a CPU here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from actors.chat_tokens import ChatTokens
from actors.engine import Engine, Scored, TokenPrompt
from actors.episode import EpisodeConfig, EpisodeRunner
from core.prompts import DEFAULT_PROMPTS, PromptTemplates
from core.sample import Sample
from core.trajectory import Trajectory

logger = logging.getLogger(__name__)


class EngineConfig(BaseModel):
    """Which engine a worker hosts and how it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["vllm", "hf"] = "vllm"
    """`vllm` for rollouts; `hf` (transformers) where vLLM is not installed."""
    model: str = Field(min_length=1)
    """Model folder or hub name."""
    dtype: str = "float32"
    """Weights and compute dtype (`bfloat16` on GPUs)."""
    max_model_len: int = Field(4096, ge=256)
    """vLLM: longest sequence (both turns with both images)."""
    kv_cache_gib: int = Field(1, ge=1)
    """vLLM on CPU: host memory reserved for the KV cache."""
    memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    """vLLM: share of GPU memory (host memory on CPU) it may take; default 0.85 GPU, 0.1 CPU."""
    weight_bucket_mb: int = Field(256, ge=1)
    """Size of one weight-transfer bucket."""
    cpu_omp_bind: str = "nobind"
    """vLLM on CPU: thread pinning (`nobind`, `auto`, or a core list like `0-7`)."""
    seed: int = 0
    """Engine sampling seed."""


def build_engine(config: EngineConfig) -> Engine:
    if config.backend == "vllm":
        from actors.vllm_engine import VLLMEngine, VLLMEngineConfig

        return VLLMEngine(
            VLLMEngineConfig(
                model=config.model,
                dtype=config.dtype,
                max_model_len=config.max_model_len,
                kv_cache_gib=config.kv_cache_gib,
                memory_utilization=config.memory_utilization,
                weight_bucket_mb=config.weight_bucket_mb,
                cpu_omp_bind=config.cpu_omp_bind,
                seed=config.seed,
            )
        )
    from actors.hf_engine import HFEngine, HFEngineConfig

    return HFEngine(HFEngineConfig(model=config.model, dtype=config.dtype, seed=config.seed))


NamedArrays = list[tuple[str, np.ndarray]]


class RolloutWorker:
    """Hosts one engine and turns batches of samples into trajectories."""

    def __init__(
        self, engine: EngineConfig, episode: EpisodeConfig, prompts: str = str(DEFAULT_PROMPTS)
    ) -> None:
        from transformers import AutoTokenizer

        self.engine = build_engine(engine)
        chat = ChatTokens(AutoTokenizer.from_pretrained(engine.model))
        self.runner = EpisodeRunner(chat, PromptTemplates.load(prompts), episode)

    def ready(self) -> int:
        """Returns the weight version once the engine is up (a cheap readiness probe)."""
        return self.engine.weight_version

    def rollout(self, samples: list[Sample]) -> list[Trajectory]:
        return self.runner.run(self.engine, samples)

    def score(self, prompts: list[TokenPrompt]) -> list[Scored]:
        """The engine's logprobs of given sequences (to check what weights it serves)."""
        return self.engine.score(prompts)

    def update_weights(
        self, version: int, named: NamedArrays | Iterable[tuple[str, torch.Tensor]]
    ) -> int:
        """Load new weights; numpy arrays (zero-copy out of Ray's object store) or tensors."""
        self.engine.update_weights(version, (_as_tensor(n, w) for n, w in named))
        logger.info("now serving weight version %d", version)
        return version

    def shutdown(self) -> None:
        self.engine.shutdown()


def _as_tensor(name: str, value: np.ndarray | torch.Tensor) -> tuple[str, torch.Tensor]:
    return name, torch.from_numpy(value) if isinstance(value, np.ndarray) else value
