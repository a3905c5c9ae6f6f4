"""Reward components by name, their weights, and the total.

Each component maps (trajectory, verifier answer, config) to a `Score`. Built in: `format`,
`accuracy`, `box` (ERGO's box adjustment), `region` (ERGO's region verification), `iou` and
`coverage` (against a ground-truth box, when the sample has one). Every component named in
`RewardConfig.weights` is scored and logged; the total is the weighted sum. Users add a
component with `@register("name")` and give it a weight in config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.trajectory import Trajectory
from rewards.answer import AccuracyConfig, match_answer
from rewards.boxes import area_ratio_score, overlap_score
from rewards.format import format_score
from rewards.score import Score
from rewards.verifier import VerifierAnswer

DEFAULT_WEIGHTS = {
    "region": 1.0,
    "box": 0.5,
    "accuracy": 1.0,
    "format": 1.0,
    "iou": 0.0,
    "coverage": 0.0,
}


class RewardConfig(BaseModel):
    """Which components are scored, their weights, and their settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    """Component name -> weight in the total (ERGO: region 1.0, box 0.5, accuracy 1, format 1).
    A weight of 0 still scores and logs the component; leave a name out to skip it."""
    box_gamma: float = Field(0.6, gt=0.0, le=1.0)
    """Box adjustment: the crop may cover at most this share of the image (ERGO: 0.6)."""
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig)
    """How the policy's (and the verifier's) answers are read and compared."""

    @field_validator("weights")
    @classmethod
    def _known(cls, weights: dict[str, float]) -> dict[str, float]:
        """An unknown name fails when the config is read, not when the first batch is scored."""
        unknown = sorted(set(weights) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward components {unknown}; known: {sorted(REWARDS)}")
        return weights


RewardFn = Callable[[Trajectory, VerifierAnswer | None, RewardConfig], Score]
REWARDS: dict[str, RewardFn] = {}


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make a component available under `name` in `RewardConfig.weights`."""

    def add(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward component {name!r} is registered already")
        REWARDS[name] = fn
        return fn

    return add


@dataclass(frozen=True)
class RewardResult:
    """Every configured component's score for one trajectory, and the weighted total; and the
    verifier's engine time for its query and the time its scorer waited for the answer (its
    shares of their batches'), from which the train loop tells how much verifier time was
    hidden behind the rollout; and whether a query sent early had to be asked again (its
    answer was late or lost)."""

    scores: dict[str, Score]
    total: float
    verifier_s: float = 0.0
    verifier_wait_s: float = 0.0
    verifier_asked_again: bool = False


def check_components(config: RewardConfig) -> None:
    """Fail early, naming the unknown components, before any scoring."""
    unknown = sorted(set(config.weights) - set(REWARDS))
    if unknown:
        raise KeyError(f"unknown reward components {unknown}; registered: {sorted(REWARDS)}")


def score_trajectory(
    trajectory: Trajectory, verdict: VerifierAnswer | None, config: RewardConfig
) -> RewardResult:
    """Score one trajectory with every component in `config.weights`."""
    if trajectory.failure is not None:
        reason = f"rollout failed: {trajectory.failure}"
        scores = {name: Score.zero(reason) for name in config.weights}
    else:
        scores = {name: REWARDS[name](trajectory, verdict, config) for name in config.weights}
    total = sum(config.weights[name] * s.value for name, s in scores.items())
    return RewardResult(scores, total)


def reward_metrics(results: list[RewardResult]) -> dict[str, float]:
    """Means per component and of the total, and how many scores failed (never hidden)."""
    if not results:
        return {}
    metrics = {"reward/total": sum(r.total for r in results) / len(results)}
    for name in results[0].scores:
        values = [r.scores[name] for r in results]
        metrics[f"reward/{name}"] = sum(s.value for s in values) / len(values)
        metrics[f"reward/{name}_failed"] = float(sum(s.failed for s in values))
    return {**metrics, **verifier_time(results)}


def verifier_time(results: list[RewardResult]) -> dict[str, float]:
    """The verifier's engine time for these results, the time scorers waited for its answers,
    the share of the former that nobody waited for (`time/verifier_hidden`: 1 when every
    answer was in before its trajectory was done, 0 when scorers asked and waited), and how
    many early queries were asked again."""
    engine = sum(r.verifier_s for r in results)
    waited = sum(r.verifier_wait_s for r in results)
    if not engine and not waited:
        return {}
    return {
        "time/verifier": engine,
        "time/verifier_wait": waited,
        "time/verifier_hidden": max(0.0, 1.0 - waited / engine) if engine else 0.0,
        "reward/verifier_asked_again": float(sum(r.verifier_asked_again for r in results)),
    }


@register("format")
def _format(t: Trajectory, _: VerifierAnswer | None, __: RewardConfig) -> Score:
    return format_score(t.stage1_text, t.stage2_text)


@register("accuracy")
def _accuracy(t: Trajectory, _: VerifierAnswer | None, config: RewardConfig) -> Score:
    return match_answer(t.stage2_text, t.sample.answer, t.sample.options, config.accuracy)


@register("box")
def _box(t: Trajectory, _: VerifierAnswer | None, config: RewardConfig) -> Score:
    if t.fallback is not None:
        return Score.zero(f"no usable box ({t.fallback})")
    return area_ratio_score(t.crop_box, t.original_size, config.box_gamma)


@register("region")
def _region(t: Trajectory, verdict: VerifierAnswer | None, config: RewardConfig) -> Score:
    if t.fallback is not None:  # the whole image would answer for a region never chosen
        return Score.zero(f"no region chosen ({t.fallback})")
    if verdict is None:
        return Score.fail("the verifier was not asked")
    if verdict.failure is not None:
        return Score.fail(f"verifier: {verdict.failure}")
    untagged = config.accuracy.model_copy(update={"require_answer_tag": False})  # a bare "B" counts
    return match_answer(verdict.text, t.sample.answer, t.sample.options, untagged)


@register("iou")
def _iou(t: Trajectory, _: VerifierAnswer | None, __: RewardConfig) -> Score:
    return overlap_score(t.crop_box, t.sample.gt_box, "iou")


@register("coverage")
def _coverage(t: Trajectory, _: VerifierAnswer | None, __: RewardConfig) -> Score:
    return overlap_score(t.crop_box, t.sample.gt_box, "coverage")
