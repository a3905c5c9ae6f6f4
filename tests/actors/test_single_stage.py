"""The single-stage baseline runner against a recording engine: what the model is shown (the
whole image at the cap, the question WITH options, one image), the trajectory's shape, and
failures kept in place; and `make_runner`'s dispatch on the episode mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from actors.chat_tokens import ChatTokens
from actors.engine import Completion, Sampling, TokenPrompt
from actors.episode import EpisodeConfig, EpisodeRunner, request_seeds
from actors.single_stage import SingleStageRunner, make_runner
from core.geometry import fit_to_budget, vision_tokens
from core.prompts import PromptTemplates
from core.synthetic import SyntheticConfig, generate


class RecordingEngine:
    """Answers every prompt with the same tokens and remembers what it was asked."""

    weight_version = 3

    def __init__(self, reply_ids: list[int]) -> None:
        self.reply_ids = reply_ids
        self.calls: list[tuple[list[TokenPrompt], Sampling, Any]] = []

    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Any = None
    ) -> list[list[Completion]]:
        self.calls.append((prompts, sampling, seeds))
        reply = Completion(self.reply_ids, [-0.5] * len(self.reply_ids), "stop")
        return [[reply] * sampling.n for _ in prompts]


@pytest.fixture(scope="module")
def chat(tiny_model_dir: Path) -> ChatTokens:
    return ChatTokens(AutoTokenizer.from_pretrained(tiny_model_dir))


def _config(**update: object) -> EpisodeConfig:
    base = {"mode": "single-stage", "coarse_max_tokens": 300, "group_size": 1}
    return EpisodeConfig.model_validate(base | update)


def test_whole_image_at_the_cap_and_the_full_question(chat: ChatTokens) -> None:
    samples = list(generate(SyntheticConfig(), num=2, seed=4))
    reply = chat.encode("<answer>B</answer>")
    engine = RecordingEngine(reply)
    runner = SingleStageRunner(chat, PromptTemplates.load(), _config(temperature=0.0))

    trajectories = runner.run(engine, samples)

    [(prompts, sampling, seeds)] = engine.calls
    assert sampling.temperature == 0.0 and sampling.n == 1
    assert seeds == request_seeds(0, 3, [(s.id, 1, 0) for s in samples])  # the run's seed 0
    assert len(set(seeds)) == len(samples)
    assert set(chat.vision_token_ids) <= set(sampling.banned_token_ids)
    expected_size = fit_to_budget(2048, 1536, 300)
    for prompt, sample, t in zip(prompts, samples, trajectories, strict=True):
        assert [image.size for image in prompt.images] == [expected_size]
        assert prompt.token_ids.count(chat.image_token_id) == 1
        text = chat.tokenizer.decode(prompt.token_ids)
        assert sample.question in text and all(option in text for option in sample.options)
        assert t.sample is sample and t.failure is None and t.weight_version == 3
        assert t.token_ids == prompt.token_ids + reply
        assert t.loss_mask == [0] * len(prompt.token_ids) + [1] * len(reply)
        assert t.stage2_text == "<answer>B</answer>" and t.stage1_text == ""
        assert t.coarse_tokens == vision_tokens(*expected_size) <= 300 and t.crop_tokens == 0
        assert t.crop_box is None and t.fallback is None and t.original_size == (2048, 1536)


def test_unreadable_samples_keep_their_place_as_failures(chat: ChatTokens) -> None:
    good, bad, empty = list(generate(SyntheticConfig(), num=3, seed=5))
    bad = dataclasses.replace(bad, image=b"\x89PNG not really")
    empty = dataclasses.replace(empty, question="  ")
    runner = SingleStageRunner(chat, PromptTemplates.load(), _config(group_size=2))

    trajectories = runner.run(RecordingEngine(chat.encode("x")), [bad, good, empty])

    assert [t.sample.id for t in trajectories] == [bad.id] * 2 + [good.id] * 2 + [empty.id] * 2
    assert [t.group_index for t in trajectories] == [0, 1] * 3
    assert "cannot decode" in (trajectories[0].failure or "")
    assert trajectories[2].failure is None and trajectories[4].failure == "empty question"


def test_make_runner_follows_the_mode(chat: ChatTokens) -> None:
    templates = PromptTemplates.load()
    assert isinstance(make_runner(chat, templates, _config()), SingleStageRunner)
    assert isinstance(make_runner(chat, templates, EpisodeConfig()), EpisodeRunner)


def test_two_stage_runner_hands_over_the_crops_before_stage_2(chat: ChatTokens) -> None:
    """`on_crops` (where a rollout worker asks the verifier) sees every member's crop after
    stage 1 and before stage 2 is generated."""
    samples = list(generate(SyntheticConfig(), num=2, seed=4))
    engine = RecordingEngine(chat.encode("<zoom>[8, 8, 40, 40]</zoom><answer>B</answer>"))
    seen: list[tuple[int, int, int]] = []  # (generate calls so far, members, usable crops)

    def on_crops(trajectories: list[Any]) -> None:
        usable = [t for t in trajectories if t.fallback is None and len(t.images) == 2]
        seen.append((len(engine.calls), len(trajectories), len(usable)))

    config = EpisodeConfig(coarse_max_tokens=64, crop_max_tokens=64, group_size=2)
    runner = make_runner(chat, PromptTemplates.load(), config, on_crops)
    trajectories = runner.run(engine, samples)
    assert seen == [(1, 4, 4)]  # once, between the two turns, with all 2 x 2 members
    assert len(engine.calls) == 2 and len(trajectories) == 4
    assert all(t.stage2_text for t in trajectories)
