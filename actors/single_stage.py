"""The single-stage baseline ERGO is compared with: the whole image, one turn, one answer.

The model sees the whole image resized to `EpisodeConfig.coarse_max_tokens` (Qwen's default
cap, 16384 tokens, is "full resolution") and the question with its options, and answers in
`<answer>…</answer>`. The prompt is the `verifier` template of the prompt file, whose meaning
is exactly this (one image, the full question, an answer tag), so no template is duplicated.

Its trajectories have the two-stage record's shape so that rewards, reports and parquet writers
read both alike: the one reply is the answering turn (`stage2_text`, `time_stage2_s`,
`finish_reasons[1]`), the stage-1 text is empty, the whole image is the only view
(`images = [whole]`, counted in `coarse_tokens`; `crop_tokens = 0`), and there is no box
and no fallback. Like the episode, a sample that cannot run yields `group_size` trajectories
carrying the reason, never a gap.

`make_runner` picks the runner for a config's `mode`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from actors.chat_tokens import ChatTokens
from actors.engine import Completion, Engine, TokenPrompt
from actors.episode import (
    EpisodeConfig,
    EpisodeRunner,
    episode_sampling,
    failed_group,
    request_seeds,
)
from core.geometry import resize_to_budget, vision_tokens
from core.prompts import PromptTemplates, verifier_messages
from core.sample import Sample, SampleError
from core.trajectory import Trajectory


class Runner(Protocol):
    """Turns a batch of samples into `group_size` trajectories each, in sample order."""

    @property
    def config(self) -> EpisodeConfig: ...

    def run(self, engine: Engine, samples: list[Sample]) -> list[Trajectory]: ...


def make_runner(
    chat: ChatTokens,
    templates: PromptTemplates,
    config: EpisodeConfig,
    on_crops: Callable[[list[Trajectory]], None] | None = None,
) -> Runner:
    """The two-stage `EpisodeRunner` (calling `on_crops` before stage 2) or the
    `SingleStageRunner` (no crops), as `config.mode` says."""
    if config.mode == "single-stage":
        return SingleStageRunner(chat, templates, config)
    return EpisodeRunner(chat, templates, config, on_crops)


@dataclass(frozen=True)
class _Prepared:
    """A sample's prompt and resized image (or why it cannot run)."""

    sample: Sample
    image: Image.Image | None = None
    original_size: tuple[int, int] = (0, 0)
    prompt_ids: list[int] | None = None
    failure: str | None = None


@dataclass(frozen=True)
class SingleStageRunner:
    """Runs batches of one-turn episodes on any `Engine` (config.mode = single-stage)."""

    chat: ChatTokens
    templates: PromptTemplates
    config: EpisodeConfig

    def run(self, engine: Engine, samples: list[Sample]) -> list[Trajectory]:
        """`group_size` trajectories per sample, grouped by sample, in sample order."""
        cfg = self.config
        prepared = [self._prepare(s) for s in samples]
        ready = [(i, p) for i, p in enumerate(prepared) if p.failure is None]
        sampling = episode_sampling(cfg, self.chat, cfg.group_size)
        version = engine.weight_version
        seeds = request_seeds(cfg.seed, version, [(p.sample.id, 1, 0) for _, p in ready])
        start = time.perf_counter()
        prompts = [TokenPrompt(p.prompt_ids or [], [p.image]) for _, p in ready if p.image]
        groups = engine.generate(prompts, sampling, seeds) if prompts else []
        seconds = time.perf_counter() - start
        done = {
            i: [self._trajectory(p, g, c, version, seconds) for g, c in enumerate(group)]
            for (i, p), group in zip(ready, groups, strict=True)
        }
        return [
            t
            for i, p in enumerate(prepared)
            for t in done.get(i)
            or failed_group(p.sample, cfg.group_size, version, p.failure or "engine")
        ]

    def _prepare(self, sample: Sample) -> _Prepared:
        if not sample.question.strip():
            return _Prepared(sample, failure="empty question")
        try:
            original = sample.decode_image()
            image = resize_to_budget(original, self.config.coarse_max_tokens)
        except (SampleError, ValueError) as exc:
            return _Prepared(sample, failure=f"image: {exc}")
        messages = verifier_messages(self.templates, sample.question, sample.options)
        return _Prepared(sample, image, original.size, self.chat.prompt(messages))

    def _trajectory(
        self, p: _Prepared, group_index: int, reply: Completion, version: int, seconds: float
    ) -> Trajectory:
        assert p.image is not None and p.prompt_ids is not None
        n_prompt = len(p.prompt_ids)
        return Trajectory(
            sample=p.sample,
            group_index=group_index,
            weight_version=version,
            token_ids=p.prompt_ids + reply.token_ids,
            loss_mask=[0] * n_prompt + [1] * len(reply.token_ids),
            logprobs=[0.0] * n_prompt + reply.logprobs,
            images=[p.image],
            stage2_text=self.chat.decode(reply.token_ids),
            original_size=p.original_size,
            coarse_tokens=vision_tokens(*p.image.size),
            finish_reasons=(None, reply.finish_reason),
            time_stage2_s=seconds,
        )
