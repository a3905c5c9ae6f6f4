"""vLLM's CPU build serves the tiny model: two images in two turns, and two-stage episodes.

One engine for the whole module: starting one takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from actors.engine import ChatRequest, Sampling
from actors.episode import EpisodeConfig, run_episodes
from actors.vllm_engine import VLLMEngine, VLLMEngineConfig
from core.geometry import vision_tokens
from core.prompts import PromptTemplates
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[VLLMEngine]:
    engine = VLLMEngine(VLLMEngineConfig(model=str(tiny_model_dir), max_model_len=2048))
    yield engine
    engine.shutdown()


def test_two_images_in_a_two_turn_conversation(engine: VLLMEngine, tiny_processor) -> None:
    images = [Image.new("RGB", (224, 168), "red"), Image.new("RGB", (112, 56), "blue")]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": "<zoom>[1, 2, 30, 40]</zoom>"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
    ]
    sampling = Sampling(max_tokens=12, temperature=1.0, n=3, seed=7)
    [completions] = engine.generate([ChatRequest(messages, images)], sampling)
    assert len(completions) == 3
    image_pad = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt = completions[0].prompt_token_ids
    assert prompt.count(image_pad) == sum(vision_tokens(*im.size) for im in images)
    for c in completions:
        assert 1 <= len(c.token_ids) <= 12
        assert len(c.logprobs) == len(c.token_ids)
        assert all(math.isfinite(lp) and lp <= 0 for lp in c.logprobs)
    assert len({tuple(c.token_ids) for c in completions}) > 1  # sampled, not copied


def test_two_stage_episodes_on_synthetic_samples(engine: VLLMEngine) -> None:
    samples = list(generate(SyntheticConfig(), num=2, seed=3))
    config = EpisodeConfig(
        coarse_max_tokens=DEMO_COARSE_TOKENS,
        crop_max_tokens=DEMO_COARSE_TOKENS,
        group_size=2,
        max_new_tokens=16,
    )
    episodes = run_episodes(engine, samples, PromptTemplates.load(), config)
    assert [(e.sample.id, e.group_index) for e in episodes] == [
        (samples[0].id, 0),
        (samples[0].id, 1),
        (samples[1].id, 0),
        (samples[1].id, 1),
    ]
    for e in episodes:
        width, height = e.original_size
        x1, y1, x2, y2 = e.zoom.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert e.coarse_tokens <= DEMO_COARSE_TOKENS and e.zoom.tokens <= DEMO_COARSE_TOKENS
        # stage 2 continues stage 1: its prompt holds stage 1's prompt and reply tokens
        assert e.stage2.prompt_token_ids[: len(e.stage1.prompt_token_ids)] == (
            e.stage1.prompt_token_ids
        )
        if e.parsed.reason is not None:  # an unusable box falls back, for the same reason
            assert e.zoom.fallback == e.parsed.reason
            assert e.zoom.box == (0, 0, width, height)
