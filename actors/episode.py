"""The two-stage ERGO episode: coarse view -> box -> crop of the original -> answer.

Batched and grouped: stage 1 runs for all samples at once with `group_size` completions each;
every stage-1 completion is continued by its own stage 2, again in one batch, and stage 2's
prompt extends stage 1's token for token (so prefix caching reuses it). Nothing is dropped: a
sample that cannot run yields `group_size` trajectories carrying the failure reason.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from actors.chat_tokens import ChatTokens
from actors.engine import Completion, Engine, Sampling, TokenPrompt
from core.geometry import parse_zoom, resize_to_budget, vision_tokens, zoom
from core.prompts import Message, PromptTemplates, coarse_messages, fine_messages
from core.sample import Sample, SampleError
from core.trajectory import Trajectory, failed_trajectories

logger = logging.getLogger(__name__)

EpisodeMode = Literal["two-stage", "single-stage"]


class EpisodeConfig(BaseModel):
    """Budgets and sampling of both stages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: EpisodeMode = "two-stage"
    """`two-stage`: ERGO's episode (this module). `single-stage`: the baseline it is compared
    with, one turn on the whole image at `coarse_max_tokens` (`actors.single_stage`)."""
    coarse_max_tokens: int = Field(1280, ge=4)
    """Vision-token cap of the coarse view (ERGO: 1280 or 640; 64 for the tiny model)."""
    crop_max_tokens: int = Field(1280, ge=4)
    """Vision-token cap of the crop (and of the fallback image)."""
    group_size: int = Field(8, ge=1)
    """Completions per prompt (GRPO's G); each stage-1 completion gets its own stage 2."""
    max_new_tokens: int = Field(256, ge=1)
    """Generation cap of each turn."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of both turns."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold of both turns."""
    seed: int | None = 0
    """Every request samples from its own seed, derived from this one, the weight version, the
    sample id, the turn and the group index: a trajectory comes out the same whichever worker
    runs it and whatever ran before it, so a run resumed at step k samples as the
    uninterrupted run did. None: the engines' own random streams."""


@dataclass
class _Stage1:
    """A sample's prepared first turn (or why it cannot run)."""

    sample: Sample
    original: Image.Image | None = None
    coarse: Image.Image | None = None
    messages: list[Message] | None = None
    prompt_ids: list[int] | None = None
    whole: Image.Image | None = None  # the fallback view, when it equals the coarse view
    failure: str | None = None


@dataclass(frozen=True)
class EpisodeRunner:
    """Runs batches of two-stage episodes on any `Engine`. `on_crops` sees each batch's
    trajectories once their crops exist, before stage 2 (the rollout worker sends the verifier
    their queries there)."""

    chat: ChatTokens
    templates: PromptTemplates
    config: EpisodeConfig
    on_crops: Callable[[list[Trajectory]], None] | None = None

    def run(self, engine: Engine, samples: list[Sample]) -> list[Trajectory]:
        """`group_size` trajectories per sample, grouped by sample, in sample order."""
        cfg = self.config
        prepared = [self._prepare(s) for s in samples]
        ready = [(i, p) for i, p in enumerate(prepared) if p.failure is None]
        version = engine.weight_version
        start = time.perf_counter()
        firsts = engine.generate(
            [TokenPrompt(p.prompt_ids or [], [p.coarse]) for _, p in ready if p.coarse],
            self._sampling(cfg.group_size),
            request_seeds(cfg.seed, version, [(p.sample.id, 1, 0) for _, p in ready]),
        )
        time1 = time.perf_counter() - start
        pending = [
            (i, *self._second_turn(p, g, first, version))
            for (i, p), group in zip(ready, firsts, strict=True)
            for g, first in enumerate(group)
        ]
        if self.on_crops is not None:
            self.on_crops([t for _, t, _, _ in pending])
        start = time.perf_counter()
        turns = [(t.sample.id, 2, t.group_index) for _, t, _, _ in pending]
        seconds = engine.generate(
            [prompt for _, _, prompt, _ in pending],
            self._sampling(1),
            request_seeds(cfg.seed, version, turns),
        )
        time2 = time.perf_counter() - start
        done: dict[int, list[Trajectory]] = {}
        for (i, t, prompt, first), [second] in zip(pending, seconds, strict=True):
            self._finish(t, prompt.token_ids, first, second)
            t.time_stage1_s, t.time_stage2_s = time1, time2
            done.setdefault(i, []).append(t)
        return [
            t
            for i, p in enumerate(prepared)
            for t in done.get(i)
            or failed_group(p.sample, cfg.group_size, version, p.failure or "engine")
        ]

    def _sampling(self, n: int) -> Sampling:
        return episode_sampling(self.config, self.chat, n)

    def _prepare(self, sample: Sample) -> _Stage1:
        if not sample.question.strip():
            return _Stage1(sample, failure="empty question")
        try:
            original = sample.decode_image()
            coarse = resize_to_budget(original, self.config.coarse_max_tokens)
        except (SampleError, ValueError) as exc:
            return _Stage1(sample, failure=f"image: {exc}")
        messages = coarse_messages(self.templates, sample, coarse.size)
        whole = coarse if self.config.crop_max_tokens == self.config.coarse_max_tokens else None
        return _Stage1(sample, original, coarse, messages, self.chat.prompt(messages), whole)

    def _second_turn(
        self, p: _Stage1, group_index: int, first: Completion, version: int
    ) -> tuple[Trajectory, TokenPrompt, Completion]:
        assert p.original is not None and p.coarse is not None
        assert p.messages is not None and p.prompt_ids is not None
        text = self.chat.decode(first.token_ids)
        parsed = parse_zoom(text)
        view = zoom(p.original, p.coarse.size, parsed, self.config.crop_max_tokens, whole=p.whole)
        user = fine_messages(self.templates, p.sample, p.messages, text)[-1]
        glue = self.chat.continuation(p.messages, first.token_ids, user)
        ids = p.prompt_ids + first.token_ids + glue
        trajectory = Trajectory(
            sample=p.sample,
            group_index=group_index,
            weight_version=version,
            loss_mask=[0] * len(p.prompt_ids) + [1] * len(first.token_ids) + [0] * len(glue),
            logprobs=[0.0] * len(p.prompt_ids) + first.logprobs + [0.0] * len(glue),
            images=[p.coarse, view.image],
            stage1_text=text,
            coarse_box=parsed.box if parsed.reason is None else None,
            crop_box=view.box,
            fallback=view.fallback,
            original_size=p.original.size,
            coarse_tokens=vision_tokens(*p.coarse.size),
            crop_tokens=view.tokens,
        )
        return trajectory, TokenPrompt(ids, [p.coarse, view.image]), first

    def _finish(
        self, t: Trajectory, prompt_ids: list[int], first: Completion, second: Completion
    ) -> None:
        t.token_ids = prompt_ids + second.token_ids
        t.loss_mask = t.loss_mask + [1] * len(second.token_ids)
        t.logprobs = t.logprobs + second.logprobs
        t.stage2_text = self.chat.decode(second.token_ids)
        t.finish_reasons = (first.finish_reason, second.finish_reason)


def episode_sampling(config: EpisodeConfig, chat: ChatTokens, n: int) -> Sampling:
    """Sampling of one turn: `n` completions, vision tokens never sampled."""
    return Sampling(
        max_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        n=n,
        banned_token_ids=chat.vision_token_ids,
    )


def request_seeds(
    seed: int | None, version: int, requests: list[tuple[str, int, int]]
) -> list[int] | None:
    """One sampling seed per (sample id, turn, group index) request at this weight version,
    stable across processes and runs (a hash, not Python's salted `hash`); None without a
    run seed. 31 bits, so that vLLM's `seed + k` for the k-th of n completions stays small."""
    if seed is None:
        return None
    keys = (f"{seed}/{version}/{sample}/{turn}/{g}".encode() for sample, turn, g in requests)
    return [int.from_bytes(hashlib.blake2b(k, digest_size=4).digest()) >> 1 for k in keys]


def failed_group(sample: Sample, group_size: int, version: int, reason: str) -> list[Trajectory]:
    """`group_size` trajectories marking a sample that could not run (never a gap)."""
    logger.warning("sample %s cannot run: %s", sample.id, reason)
    return failed_trajectories([sample], group_size, version, reason)
