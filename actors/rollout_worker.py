"""A rollout worker: one engine, the episode runner, and the weights it serves.

A plain class; `jobs/` (or a pool built there) wraps it with `ray.remote` and the resources from
config (one GPU each on clusters, a fraction of a CPU here).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actors.chat_tokens import ChatTokens
from actors.engine import EngineConfig, Scored, TokenPrompt
from actors.episode import EpisodeConfig
from actors.guarded_engine import build_engine
from actors.single_stage import make_runner
from actors.verifier import ask_early
from core.prompts import DEFAULT_PROMPTS, PromptTemplates
from core.sample import Sample
from core.sharded_weights import ShardedWeights, from_wire
from core.shared_weights import SharedWeights
from core.trajectory import Trajectory

logger = logging.getLogger(__name__)


NamedArrays = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class EpisodeRequest:
    """A sample and the episode to run it with, so that one worker (one engine) serves every
    mode and budget: training's sampled episode, validation's greedy one, evaluation's caps."""

    sample: Sample
    episode: EpisodeConfig


class RolloutWorker:
    """Hosts one engine and turns batches of episode requests into trajectories."""

    def __init__(
        self,
        engine: EngineConfig,
        prompts: str = str(DEFAULT_PROMPTS),
        verifiers: list[Any] | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.engine = build_engine(engine)
        self.chat = ChatTokens(AutoTokenizer.from_pretrained(engine.model))
        self.templates = PromptTemplates.load(prompts)
        self.weights_via = ""
        self.verifiers = verifiers or []  # asked as soon as stage 1's crops exist
        self._turn = itertools.count(random.randrange(len(self.verifiers) or 1))

    def ready(self) -> int:
        """Returns the weight version once the engine is up (a cheap readiness probe)."""
        return self.engine.weight_version

    def health(self) -> dict[str, Any]:
        """What the engine can do now: one token within its deadline, or `EngineDead`."""
        return self.engine.health()

    def run(self, requests: list[EpisodeRequest]) -> list[Trajectory]:
        """Each request's `group_size` trajectories, in request order; consecutive requests
        with the same episode config run as one batch."""
        trajectories: list[Trajectory] = []
        on_crops = self._ask_verifier if self.verifiers else None
        for episode, run in itertools.groupby(requests, key=lambda r: r.episode):
            runner = make_runner(self.chat, self.templates, episode, on_crops)
            trajectories += runner.run(self.engine, [r.sample for r in run])
        return trajectories

    def _ask_verifier(self, trajectories: list[Trajectory]) -> None:
        """Send the crops to the next verifier actor now; stage 2 generates meanwhile."""
        ask_early(self.verifiers[next(self._turn) % len(self.verifiers)], trajectories)

    def score(self, prompts: list[TokenPrompt]) -> list[Scored]:
        """The engine's logprobs of given sequences (to check what weights it serves)."""
        return self.engine.score(prompts)

    def update_weights(
        self,
        version: int,
        weights: SharedWeights | ShardedWeights | NamedArrays | Iterable[tuple[str, torch.Tensor]],
    ) -> int:
        """Load new weights: a shared-memory file, every learner rank's rows from the object
        store (or the file, when it is on this node), numpy arrays (zero-copy out of Ray's
        object store) or tensors."""
        if isinstance(weights, ShardedWeights):
            weights = weights.for_this_node()
        if isinstance(weights, SharedWeights):  # a checkpoint file: the engine loads it as is
            self.engine.update_weights(version, weights)
            self.weights_via = "shared memory"
        else:
            self.engine.update_weights(version, ((n, from_wire(w)) for n, w in weights))
            self.weights_via = "object store"
        logger.info("now serving weight version %d (through the %s)", version, self.weights_via)
        return version

    def weights_source(self) -> tuple[int, str]:
        """The weight version served and how it arrived: "shared memory" or "object store"
        ("" before any update)."""
        return self.engine.weight_version, self.weights_via

    def reset_caches(self) -> None:
        """Forget cached prompts and images, so that an evaluation run does not reuse an image
        an earlier run processed (e.g. the single-stage view equals the coarse view at the same
        cap) and pays full price. Only vLLM engines cache across calls."""
        self.engine.reset_caches()

    def shutdown(self) -> None:
        self.engine.shutdown()
