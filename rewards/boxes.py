"""Box rewards: the crop's share of the image, and IoU / coverage against a ground-truth box.

Boxes are `(x1, y1, x2, y2)` in original-image pixels. Every function is total: a missing box,
non-finite numbers, an inverted box or one outside the image give a defined score of 0 with
the reason, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from rewards.score import Score

BoxLike = Sequence[float]


def box_problem(box: BoxLike | None) -> str | None:
    """Why a box cannot be scored (None when it can)."""
    if box is None:
        return "no box"
    if len(box) != 4:
        return f"box has {len(box)} numbers, not 4"
    if not all(math.isfinite(v) for v in box):
        return "box has non-finite coordinates"
    if box[2] <= box[0] or box[3] <= box[1]:
        return "box has no area"
    return None


def area(box: BoxLike) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: BoxLike, b: BoxLike) -> float:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of two valid boxes, in [0, 1]."""
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def coverage(crop: BoxLike, gt: BoxLike) -> float:
    """Share of the ground-truth box inside the crop, in [0, 1]."""
    gt_area = area(gt)
    return min(1.0, intersection(crop, gt) / gt_area) if gt_area > 0 else 0.0


def area_ratio_score(crop: BoxLike | None, image_size: tuple[int, int], gamma: float) -> Score:
    """ERGO's box-adjustment reward: 1 if the crop covers at most `gamma` of the image."""
    problem = box_problem(crop)
    if problem is not None:
        return Score.zero(problem)
    assert crop is not None
    width, height = image_size
    if width <= 0 or height <= 0:
        return Score.zero(f"image size {image_size} is empty")
    inside = intersection(crop, (0, 0, width, height))
    if inside <= 0:
        return Score.zero("box is outside the image")
    ratio = inside / (width * height)
    return Score.ok() if ratio <= gamma else Score.zero(f"crop covers {ratio:.0%} > {gamma:.0%}")


def overlap_score(
    crop: BoxLike | None, gt: BoxLike | None, measure: Literal["iou", "coverage"]
) -> Score:
    """IoU (`measure="iou"`) or coverage of the ground truth by the crop."""
    if gt is None:
        return Score.zero("sample has no ground-truth box")
    problem = box_problem(crop)
    if problem is not None:
        return Score.zero(problem)
    assert crop is not None
    value = iou(crop, gt) if measure == "iou" else coverage(crop, gt)
    return Score(value, None if value > 0 else "crop misses the ground-truth box")
