"""Components by name, the weighted total, failures that are counted, and user components."""

import dataclasses

import pytest
from PIL import Image

from core.synthetic import SyntheticConfig, generate
from core.trajectory import Trajectory
from rewards.registry import (
    DEFAULT_WEIGHTS,
    REWARDS,
    RewardConfig,
    check_components,
    register,
    reward_metrics,
    score_trajectory,
)
from rewards.score import Score
from rewards.verifier import VerifierAnswer, query_for


@pytest.fixture(scope="module")
def sample():
    return dataclasses.replace(next(generate(SyntheticConfig(), num=1, seed=0)), answer="B")


def good(sample, crop_box=(0, 0, 512, 512)) -> Trajectory:
    return Trajectory(
        sample,
        group_index=0,
        weight_version=1,
        images=[Image.new("RGB", (56, 56)), Image.new("RGB", (28, 28))],
        stage1_text="<think>top left</think><zoom>[0, 0, 16, 16]</zoom>",
        stage2_text="<think>I see it</think><answer>B</answer>",
        crop_box=crop_box,
        original_size=(2048, 1536),
    )


def test_every_default_component_is_scored_and_weighted(sample) -> None:
    result = score_trajectory(good(sample), VerifierAnswer("B"), RewardConfig())
    assert set(result.scores) == set(DEFAULT_WEIGHTS)
    assert {n: s.value for n, s in result.scores.items() if n not in ("iou", "coverage")} == {
        "region": 1.0,
        "box": 1.0,
        "accuracy": 1.0,
        "format": 1.0,
    }
    assert result.total == pytest.approx(1.0 + 0.5 + 1.0 + 1.0)  # iou/coverage weigh 0


def test_weights_come_from_config(sample) -> None:
    config = RewardConfig(weights={"accuracy": 2.0, "box": 0.25})
    result = score_trajectory(good(sample, crop_box=(0, 0, 2048, 1536)), None, config)
    assert set(result.scores) == {"accuracy", "box"}
    assert result.scores["box"].value == 0.0  # the whole image is over gamma
    assert result.total == 2.0


def test_region_needs_a_chosen_region_and_an_answer(sample) -> None:
    config = RewardConfig(weights={"region": 1.0})
    wrong = score_trajectory(good(sample), VerifierAnswer("<answer>C</answer>"), config)
    assert wrong.scores["region"] == Score.zero("chose C")
    unasked = score_trajectory(good(sample), None, config).scores["region"]
    assert unasked.failed and unasked.value == 0.0
    timed_out = score_trajectory(good(sample), VerifierAnswer(failure="timeout"), config)
    assert timed_out.scores["region"] == Score.fail("verifier: timeout")
    fallback = dataclasses.replace(good(sample), fallback="missing")
    assert query_for(fallback) is None
    scored = score_trajectory(fallback, VerifierAnswer("B"), config).scores["region"]
    assert scored.value == 0.0 and not scored.failed and "missing" in (scored.reason or "")


def test_verifier_is_asked_about_the_crop(sample) -> None:
    t = good(sample)
    query = query_for(t)
    assert query is not None and query.crop is t.images[1]
    assert (query.question, query.options) == (sample.question, sample.options)


def test_failed_rollouts_score_zero_in_every_component(sample) -> None:
    failed = Trajectory(sample, 0, 1, failure="image: cannot identify image file")
    result = score_trajectory(failed, None, RewardConfig())
    assert result.total == 0.0
    assert all(
        s.value == 0.0 and "rollout failed" in (s.reason or "") for s in result.scores.values()
    )


def test_ground_truth_overlap_is_scored(sample) -> None:
    assert sample.gt_box is not None
    x1, y1, x2, y2 = (int(v) for v in sample.gt_box)
    result = score_trajectory(good(sample, crop_box=(x1, y1, x2, y2)), None, RewardConfig())
    assert result.scores["iou"].value == pytest.approx(1.0, abs=1e-3)
    assert result.scores["coverage"].value == pytest.approx(1.0, abs=1e-3)


def test_unknown_components_fail_in_the_config_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"novelty.*known: \['accuracy'"):
        RewardConfig(weights={"novelty": 1.0})


def test_users_register_components(sample) -> None:
    @register("short_answer")
    def short_answer(t, _verdict, _config) -> Score:
        return Score.ok() if len(t.stage2_text) < 100 else Score.zero("long")

    try:
        config = RewardConfig(weights={"short_answer": 0.5})
        check_components(config)
        assert score_trajectory(good(sample), None, config).total == 0.5
        with pytest.raises(ValueError, match="registered already"):
            register("short_answer")(short_answer)
    finally:
        del REWARDS["short_answer"]


def test_metrics_count_failed_scores(sample) -> None:
    config = RewardConfig(weights={"region": 1.0, "format": 1.0})
    results = [
        score_trajectory(good(sample), VerifierAnswer("B"), config),
        score_trajectory(good(sample), VerifierAnswer(failure="timeout"), config),
    ]
    metrics = reward_metrics(results)
    assert metrics["reward/region"] == 0.5
    assert metrics["reward/region_failed"] == 1.0
    assert metrics["reward/format_failed"] == 0.0
    assert metrics["reward/total"] == 1.5
