"""The stripes task (`SyntheticConfig(task="stripes")`): its question and
option contract, and its acceptance property. Rendering one scene four times, once per stripe
orientation of the named landmark, gives four coarse views that are alike to within a few grey
levels, and a gradient classifier reading them is at chance; the ground-truth crops at the same
token budget differ by tens of levels, and the same classifier reads every one right. Both
hold for the task's defaults and for the demo's layout (`configs/demo.toml`: one 600-px
landmark, whose 64-token crop shows the stripes fainter, so the classifier reads most, not
all, of them).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from core.drawing import ORIENTATIONS, Orientation
from core.geometry import resize_to_budget
from core.sample import OPTION_LETTERS
from core.synthetic import (
    DEMO_COARSE_TOKENS,
    STRIPES_CATEGORY,
    Scene,
    SyntheticConfig,
    generate,
    make_sample,
    make_scene,
    render,
    sample_rng,
)

CONFIG = SyntheticConfig(task="stripes")
ONE_LANDMARK = SyntheticConfig(
    task="stripes",
    landmarks=1,
    landmark_jitter=False,
    landmark_min_size=400,
    landmark_max_size=400,
    glyph_gap=100,  # spacing that keeps a 2x2 grid of cells
)
LAYOUTS = {"defaults": CONFIG, "one landmark": ONE_LANDMARK}
SEEDS = range(12)


def test_a_sample_asks_for_the_named_landmarks_orientation() -> None:
    for index in range(8):
        sample = make_sample(CONFIG, seed=3, index=index)
        scene = make_scene(CONFIG, sample_rng(3, index))
        named = [lm for lm in scene.landmarks if lm.name in sample.question]
        assert len(named) == 1, sample.question
        target = named[0]
        assert sample.category == STRIPES_CATEGORY
        assert sample.options == ORIENTATIONS  # one fixed order: the letter names the class
        assert sample.options[OPTION_LETTERS.index(sample.answer)] == target.orientation
        assert sample.gt_box == tuple(float(v) for v in target.box)
        # every landmark has its own orientation: the others tell nothing about the answer
        assert len({lm.orientation for lm in scene.landmarks}) == len(scene.landmarks)


def test_same_seed_same_bytes_and_the_glyph_task_stays_the_default() -> None:
    assert list(generate(CONFIG, 2, seed=5)) == list(generate(CONFIG, 2, seed=5))
    glyph = make_sample(SyntheticConfig(), seed=5, index=0)
    assert glyph.question.startswith("Which letter")
    assert glyph.image != make_sample(CONFIG, seed=5, index=0).image


def test_more_options_than_orientations_is_refused() -> None:
    with pytest.raises(ValueError, match="num_options 5"):
        SyntheticConfig(task="stripes", num_options=5)


def _with_orientation(
    config: SyntheticConfig, scene: Scene, orientation: Orientation
) -> Image.Image:
    """The scene rendered with its first landmark striped `orientation`, as RGB."""
    first = dataclasses.replace(scene.landmarks[0], orientation=orientation)
    return render(config, dataclasses.replace(scene, landmarks=(first, *scene.landmarks[1:])))


def _views(
    config: SyntheticConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """(coarse views, crop views, the landmark's box in coarse pixels): one of each per
    orientation, at the demo's token budget. The crop is the landmark's box, 10% wider."""
    scene = make_scene(config, sample_rng(seed, 0))
    x1, y1, x2, y2 = scene.landmarks[0].box
    pad = (x2 - x1) // 10
    coarse, crops = [], []
    for orientation in ORIENTATIONS:
        image = _with_orientation(config, scene, orientation).convert("RGB")
        coarse.append(np.asarray(resize_to_budget(image, DEMO_COARSE_TOKENS), np.float64))
        crop = image.crop((x1 - pad, y1 - pad, x2 + pad, y2 + pad))
        crops.append(np.asarray(resize_to_budget(crop, DEMO_COARSE_TOKENS), np.float64))
    sx, sy = coarse[0].shape[1] / image.width, coarse[0].shape[0] / image.height
    box = (int(x1 * sx), int(y1 * sy), int(np.ceil(x2 * sx)), int(np.ceil(y2 * sy)))
    return np.stack(coarse), np.stack(crops), box


def _orientation(view: np.ndarray) -> Orientation:
    """A structure-tensor classifier over the middle of a view (grey levels): the direction in
    which brightness changes most is across the stripes."""
    h, w = view.shape[:2]
    grey = view[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean(axis=2)
    gy, gx = np.gradient(grey)
    sxx, syy, sxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    scores = [syy - sxx, sxx - syy, 2 * sxy, -2 * sxy]  # same order as ORIENTATIONS
    return ORIENTATIONS[int(np.argmax(scores))]


@pytest.fixture(scope="module", params=list(LAYOUTS))
def views(request: pytest.FixtureRequest) -> list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]:
    return [_views(LAYOUTS[request.param], seed) for seed in SEEDS]


def test_the_coarse_view_does_not_show_the_orientation(views) -> None:  # type: ignore[no-untyped-def]
    for coarse, _, (x1, y1, x2, y2) in views:
        spread = coarse.max(axis=0) - coarse.min(axis=0)  # per pixel, over the 4 orientations
        assert spread[y1:y2, x1:x2].mean() < 1.5  # grey levels of 255, over the landmark
        assert spread.max() <= 20  # the worst pixel, on the outline of the striped core
        assert np.all(spread[:, : max(0, x1 - 3)] == 0)  # nothing else moves
    guesses = [
        _orientation(c[y1:y2, x1:x2]) for coarse, _, (x1, y1, x2, y2) in views for c in coarse
    ]
    truth = [o for _ in views for o in ORIENTATIONS]
    accuracy = np.mean([g == t for g, t in zip(guesses, truth, strict=True)])
    assert accuracy <= 0.40, accuracy  # chance is 0.25


def test_the_crop_shows_it_plainly(views) -> None:  # type: ignore[no-untyped-def]
    read = []
    for _, crops, _ in views:
        h, w = crops.shape[1:3]
        middle = crops[:, h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
        assert (middle.max(axis=0) - middle.min(axis=0)).mean() > 20
        read += [_orientation(c) == o for c, o in zip(crops, ORIENTATIONS, strict=True)]
    assert np.mean(read) >= 0.8, np.mean(read)
