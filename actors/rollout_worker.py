"""A rollout worker: one engine, the episode runner, and the weights it serves.

A plain class; `jobs/` (or a pool built there) wraps it with `ray.remote` and the resources from
config (one GPU each on clusters, a fraction of a CPU here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch

from actors.chat_tokens import ChatTokens
from actors.engine import Engine, EngineConfig, Scored, TokenPrompt
from actors.episode import EpisodeConfig, EpisodeRunner
from core.prompts import DEFAULT_PROMPTS, PromptTemplates
from core.sample import Sample
from core.trajectory import Trajectory

logger = logging.getLogger(__name__)


def build_engine(config: EngineConfig) -> Engine:
    if config.backend == "vllm":
        from actors.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from actors.hf_engine import HFEngine

    return HFEngine(config)


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
