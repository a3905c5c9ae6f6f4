"""The two-stage ERGO episode: coarse view -> box -> crop of the original -> answer.

Batched: stage 1 runs for every sample at once with `group_size` completions each, then every
stage-1 completion is continued by its own stage 2, again in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from actors.engine import ChatRequest, Completion, Engine, Sampling
from core.geometry import Zoom, ZoomParse, parse_zoom, resize_to_budget, zoom
from core.prompts import PromptTemplates, coarse_messages, fine_messages
from core.sample import Sample


@dataclass(frozen=True)
class EpisodeConfig:
    """Budgets and sampling for both stages."""

    coarse_max_tokens: int = 1280
    crop_max_tokens: int = 1280
    group_size: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Episode:
    """One sample's two turns as the policy produced them."""

    sample: Sample
    group_index: int
    original_size: tuple[int, int]
    coarse_image: Image.Image
    stage1: Completion
    parsed: ZoomParse
    zoom: Zoom
    stage2: Completion

    @property
    def coarse_tokens(self) -> int:
        return (self.coarse_image.width // 28) * (self.coarse_image.height // 28)

    @property
    def vision_tokens(self) -> int:
        return self.coarse_tokens + self.zoom.tokens


def run_episodes(
    engine: Engine, samples: list[Sample], templates: PromptTemplates, config: EpisodeConfig
) -> list[Episode]:
    """`group_size` episodes per sample, grouped by sample, in sample order."""
    originals = [s.decode_image() for s in samples]
    coarse = [resize_to_budget(image, config.coarse_max_tokens) for image in originals]
    stage1_requests = [
        ChatRequest(coarse_messages(templates, s, c.size), [c])
        for s, c in zip(samples, coarse, strict=True)
    ]
    sampling = Sampling(
        max_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed
    )
    stage1 = engine.generate(stage1_requests, _with_n(sampling, config.group_size))

    pending = []
    for i, completions in enumerate(stage1):
        for g, first in enumerate(completions):
            parsed = parse_zoom(first.text)
            view = zoom(originals[i], coarse[i].size, parsed, config.crop_max_tokens)
            messages = fine_messages(templates, samples[i], stage1_requests[i].messages, first.text)
            pending.append(
                (i, g, first, parsed, view, ChatRequest(messages, [coarse[i], view.image]))
            )
    stage2 = engine.generate([p[-1] for p in pending], sampling)
    return [
        Episode(samples[i], g, originals[i].size, coarse[i], first, parsed, view, second[0])
        for (i, g, first, parsed, view, _), second in zip(pending, stage2, strict=True)
    ]


def _with_n(sampling: Sampling, n: int) -> Sampling:
    return Sampling(sampling.max_tokens, sampling.temperature, sampling.top_p, n, sampling.seed)
