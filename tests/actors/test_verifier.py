"""The verifier worker on the tiny model (transformers engine), and reward workers using it.

The verifier must see the crop and nothing else: a recording wrapper around the real engine
keeps every prompt it receives, and the test inspects their images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from actors.engine import EngineConfig, TokenPrompt
from actors.reward_worker import RewardWorker
from actors.verifier import VerifierWorker
from core.prompts import PromptTemplates, verifier_messages
from core.trajectory import Trajectory
from rewards.registry import DEFAULT_WEIGHTS, RewardConfig
from rewards.verifier import VerifierQuery, query_for


@dataclass
class Recording:
    """Delegates to a real engine and keeps the prompts it was given."""

    engine: Any
    prompts: list[TokenPrompt] = field(default_factory=list)

    def generate(self, prompts: list[TokenPrompt], sampling: Any, seeds: Any = None) -> Any:
        self.prompts.extend(prompts)
        return self.engine.generate(prompts, sampling, seeds)

    def shutdown(self) -> None:
        self.engine.shutdown()


@pytest.fixture(scope="module")
def verifier(tiny_model_dir: Path) -> Iterator[VerifierWorker]:
    worker = VerifierWorker(EngineConfig(backend="hf", model=str(tiny_model_dir)), 8)
    worker.engine = Recording(worker.engine)  # type: ignore[assignment]
    yield worker
    worker.shutdown()


@pytest.fixture(scope="module")
def trajectories(scripted_trajectories: list[Trajectory]) -> list[Trajectory]:
    """Those that chose a region (not the fallback)."""
    return [t for t in scripted_trajectories if t.fallback is None]


def test_verifier_sees_only_the_crop(
    verifier: VerifierWorker, trajectories: list[Trajectory]
) -> None:
    recording: Recording = verifier.engine  # type: ignore[assignment]
    recording.prompts.clear()
    queries = [q for t in trajectories if (q := query_for(t)) is not None]
    answers = verifier.answer(queries)
    assert len(answers) == len(queries) == len(trajectories)
    assert all(a.failure is None for a in answers)
    assert len(recording.prompts) == len(queries)
    for prompt, t in zip(recording.prompts, trajectories, strict=True):
        [image] = prompt.images
        assert image is t.images[1]  # the crop, by identity
        assert image is not t.images[0] and image.size != t.original_size
        assert prompt.token_ids.count(verifier.chat.image_token_id) == 1
        text = verifier.chat.tokenizer.decode(prompt.token_ids)
        assert t.sample.question in text
        assert all(option in text for option in t.sample.options)


def test_verifier_prompt_lists_options_only_for_multiple_choice() -> None:
    templates = PromptTemplates.load()
    [message] = verifier_messages(templates, "What is it?", ("cat", "dog"))
    parts = message["content"]
    assert [p["type"] for p in parts] == ["image", "text"]
    assert "A. cat\nB. dog" in parts[1]["text"]
    [free] = verifier_messages(templates, "What is it?", ())
    assert "Options" not in free["content"][1]["text"]


def test_verifier_is_greedy(verifier: VerifierWorker) -> None:
    """Frozen and greedy: the same crop and question always get the same answer."""
    query = VerifierQuery(Image.new("RGB", (56, 56), "red"), "Which color?", ("red", "blue"))
    first, second = verifier.answer([query, query])
    assert first == second == verifier.answer([query])[0]


def test_reward_worker_scores_every_component_in_order(
    verifier: VerifierWorker, trajectories: list[Trajectory]
) -> None:
    worker = RewardWorker(RewardConfig(), verifier)
    failed = Trajectory(trajectories[0].sample, 0, 0, failure="image: unreadable")
    batch = [*trajectories, failed]
    results = worker.score(batch)
    assert len(results) == len(batch)
    for result in results:
        assert set(result.scores) == set(DEFAULT_WEIGHTS)
        assert not result.scores["region"].failed  # the verifier answered every crop
    assert [r.scores["accuracy"].value == 1.0 for r in results[:-1]] == [
        t.sample.answer == t.stage2_text.removesuffix("</answer>")[-1] for t in trajectories
    ]
    assert results[-1].total == 0.0
    assert "rollout failed" in (results[-1].scores["box"].reason or "")


def test_reward_worker_without_verifier_marks_region_failed(
    trajectories: list[Trajectory],
) -> None:
    [result] = RewardWorker(RewardConfig()).score(trajectories[:1])
    assert result.scores["region"].failed
    assert result.scores["region"].reason == "the verifier was not asked"
