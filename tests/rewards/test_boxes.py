"""Box rewards: IoU, coverage and area-ratio properties; bad boxes score, never raise."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rewards.boxes import area_ratio_score, coverage, iou, overlap_score

coord = st.floats(min_value=0, max_value=1000, allow_nan=False)


@st.composite
def boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x1, y1 = draw(coord), draw(coord)
    w = draw(st.floats(min_value=1, max_value=500))
    h = draw(st.floats(min_value=1, max_value=500))
    return (x1, y1, x1 + w, y1 + h)


@given(boxes(), boxes())
def test_iou_is_symmetric_and_bounded(a: tuple, b: tuple) -> None:
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert 0.0 <= iou(a, b) <= 1.0


@given(boxes(), boxes())
def test_iou_is_one_only_for_identical_boxes(a: tuple, b: tuple) -> None:
    assert iou(a, a) == 1.0
    if iou(a, b) == 1.0:
        assert all(math.isclose(u, v, abs_tol=1e-6) for u, v in zip(a, b, strict=True))


@given(boxes(), st.floats(min_value=0, max_value=50), st.floats(min_value=0, max_value=50))
def test_coverage_is_one_when_the_crop_contains_the_truth(gt: tuple, dx: float, dy: float) -> None:
    crop = (gt[0] - dx, gt[1] - dy, gt[2] + dx, gt[3] + dy)
    assert coverage(crop, gt) == 1.0
    assert 0.0 <= coverage(gt, crop) <= 1.0


@given(boxes(), boxes())
def test_coverage_is_bounded(crop: tuple, gt: tuple) -> None:
    assert 0.0 <= coverage(crop, gt) <= 1.0


@given(
    st.floats(min_value=0.05, max_value=1.0),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=1000),
    st.floats(min_value=0.1, max_value=1.0),
)
def test_box_reward_is_monotone_in_area(gamma: float, w1: int, w2: int, h: float) -> None:
    """A larger crop never scores more than a smaller one."""
    size = (1000, 1000)
    height = h * 1000
    small, large = sorted((w1, w2))
    small_score = area_ratio_score((0, 0, small, height), size, gamma).value
    large_score = area_ratio_score((0, 0, large, height), size, gamma).value
    assert small_score >= large_score


def test_box_reward_threshold() -> None:
    size = (100, 100)
    assert area_ratio_score((0, 0, 60, 100), size, 0.6).value == 1.0
    over = area_ratio_score((0, 0, 61, 100), size, 0.6)
    assert over.value == 0.0 and over.reason == "crop covers 61% > 60%"


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        (None, "no box"),
        ((0, 0, 10), "box has 3 numbers, not 4"),
        ((math.nan, 0, 10, 10), "box has non-finite coordinates"),
        ((0, 0, math.inf, 10), "box has non-finite coordinates"),
        ((10, 10, 5, 20), "box has no area"),
        ((200, 200, 300, 300), "box is outside the image"),
    ],
)
def test_bad_boxes_score_zero_with_a_reason(box: tuple | None, reason: str) -> None:
    for score in (
        area_ratio_score(box, (100, 100), 0.6),
        overlap_score(box, (0, 0, 10, 10), "iou"),
        overlap_score(box, (0, 0, 10, 10), "coverage"),
    ):
        assert score.value == 0.0 and not score.failed
        assert score.reason is not None
    assert area_ratio_score(box, (100, 100), 0.6).reason == reason


def test_overlap_without_ground_truth() -> None:
    score = overlap_score((0, 0, 5, 5), None, "iou")
    assert score.value == 0.0 and score.reason == "sample has no ground-truth box"
    assert overlap_score((0, 0, 10, 10), (5, 0, 15, 10), "iou").value == pytest.approx(1 / 3)
    assert overlap_score((0, 0, 10, 10), (5, 0, 15, 10), "coverage").value == 0.5
