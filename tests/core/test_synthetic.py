"""Tests for `core.synthetic` and `jobs.make_data synthetic`: determinism and laziness, the
question/option contract, and the task's acceptance property: at the demo's coarse budget the
target glyph is a dot of at most 4 px, while a ground-truth crop at the same budget shows it at
24 px or more.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from core.dataset import count_samples, iter_samples
from core.geometry import PATCH, ZoomParse, fit_to_budget, zoom
from core.sample import OPTION_LETTERS, Sample
from core.synthetic import (
    CATEGORY,
    DEMO_COARSE_TOKENS,
    GLYPH_COLOUR,
    SyntheticConfig,
    centred_boxes,
    generate,
    make_sample,
    make_scene,
    sample_rng,
)
from jobs import make_data

ACCEPTANCE_SEEDS = range(20)
COARSE_MAX_PX = 4.0
CROP_MIN_PX = 24.0
# The largest square a DEMO_COARSE_TOKENS budget shows at 1:1 (8x8 tokens = 224 px).
CROP_SIDE = math.isqrt(DEMO_COARSE_TOKENS) * PATCH


@pytest.fixture(scope="module")
def config() -> SyntheticConfig:
    return SyntheticConfig()


@pytest.fixture(scope="module")
def samples(config: SyntheticConfig) -> list[tuple[int, int, Sample]]:
    """(seed, index, sample) for two samples of each acceptance seed, default config."""
    return [(s, i, make_sample(config, s, i)) for s in ACCEPTANCE_SEEDS for i in range(2)]


def test_same_seed_gives_identical_samples(config: SyntheticConfig) -> None:
    first = list(generate(config, 3, seed=7))
    second = list(generate(config, 3, seed=7))
    assert first == second
    assert [s.image for s in first] == [s.image for s in second]


def test_different_seed_gives_different_samples(config: SyntheticConfig) -> None:
    a = list(generate(config, 3, seed=7))
    b = list(generate(config, 3, seed=8))
    assert all(x.image != y.image for x, y in zip(a, b, strict=True))
    assert len({s.image for s in a}) == 3  # samples within one seed differ too


def test_sample_depends_only_on_seed_and_index(config: SyntheticConfig) -> None:
    short = list(generate(config, 2, seed=5))
    long = list(generate(config, 5, seed=5))
    assert short == long[:2]
    assert long[4] == make_sample(config, 5, 4)
    assert [s.id for s in long] == [f"synthetic-5-{i}" for i in range(5)]


def test_generate_is_lazy(config: SyntheticConfig) -> None:
    stream = generate(config, 10**9, seed=0)
    assert next(stream).id == "synthetic-0-0"


@pytest.mark.parametrize("num, seed", [(-1, 0), (1, -1)])
def test_generate_rejects_negative_arguments(config: SyntheticConfig, num: int, seed: int) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        next(generate(config, num, seed))


def test_sample_contract(samples: list[tuple[int, int, Sample]]) -> None:
    for _, _, sample in samples:
        assert sample.source == "synthetic"
        assert sample.category == CATEGORY
        assert len(sample.options) == 4
        assert len(set(sample.options)) == 4
        answer_index = OPTION_LETTERS.index(sample.answer)
        assert answer_index < len(sample.options)
        assert sample.options.count(sample.options[answer_index]) == 1
        assert "Which letter is written next to the large" in sample.question
        assert not any(f"{letter}." in sample.question for letter in "ABCD")


def test_options_are_the_glyphs_of_all_landmarks(
    config: SyntheticConfig, samples: list[tuple[int, int, Sample]]
) -> None:
    """With as many landmarks as options, every option sits next to some landmark."""
    for seed, index, sample in samples:
        scene = make_scene(config, sample_rng(seed, index))
        assert set(sample.options) == {lm.glyph for lm in scene.landmarks}
        target = next(lm for lm in scene.landmarks if lm.name in sample.question)
        assert sample.options[OPTION_LETTERS.index(sample.answer)] == target.glyph
        assert sample.gt_box == tuple(float(v) for v in target.glyph_box)


def test_gt_box_is_inside_the_image_and_holds_the_target(
    samples: list[tuple[int, int, Sample]],
) -> None:
    for _, _, sample in samples:
        assert sample.gt_box is not None
        image = np.asarray(sample.decode_image())
        x1, y1, x2, y2 = (int(v) for v in sample.gt_box)
        assert 0 <= x1 < x2 <= image.shape[1]
        assert 0 <= y1 < y2 <= image.shape[0]
        pad = 8  # no other glyph lies this close to the target
        window = image[y1 - pad : y2 + pad, x1 - pad : x2 + pad]
        ys, xs = np.nonzero(np.all(window == GLYPH_COLOUR, axis=-1))
        assert len(xs) > 0, sample.id
        assert xs.min() >= pad and xs.max() < pad + x2 - x1, sample.id
        assert ys.min() >= pad and ys.max() < pad + y2 - y1, sample.id


def test_target_is_a_dot_in_the_coarse_view(samples: list[tuple[int, int, Sample]]) -> None:
    for _, _, sample in samples:
        assert sample.gt_box is not None
        width, height = sample.decode_image().size
        coarse_w, coarse_h = fit_to_budget(width, height, DEMO_COARSE_TOKENS)
        x1, y1, x2, y2 = sample.gt_box
        longest = max((x2 - x1) * coarse_w / width, (y2 - y1) * coarse_h / height)
        assert longest <= COARSE_MAX_PX, sample.id


def test_target_is_readable_in_the_ground_truth_crop(
    samples: list[tuple[int, int, Sample]],
) -> None:
    """Zoom (as the fine stage does) on a CROP_SIDE square around the gt box at the demo budget."""
    for _, _, sample in samples:
        assert sample.gt_box is not None
        image = sample.decode_image()
        coarse_w, coarse_h = fit_to_budget(image.width, image.height, DEMO_COARSE_TOKENS)
        sx, sy = coarse_w / image.width, coarse_h / image.height
        x1, y1, x2, y2 = sample.gt_box
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, CROP_SIDE / 2
        region = (cx - half, cy - half, cx + half, cy + half)
        coarse_box = (region[0] * sx, region[1] * sy, region[2] * sx, region[3] * sy)
        view = zoom(image, (coarse_w, coarse_h), ZoomParse(coarse_box), DEMO_COARSE_TOKENS)
        assert view.fallback is None
        assert view.tokens <= DEMO_COARSE_TOKENS
        bx1, by1, bx2, by2 = view.box
        assert bx1 <= x1 and by1 <= y1 and x2 <= bx2 and y2 <= by2, sample.id
        scale_x = view.image.width / (bx2 - bx1)
        scale_y = view.image.height / (by2 - by1)
        longest = max((x2 - x1) * scale_x, (y2 - y1) * scale_y)
        assert longest >= CROP_MIN_PX, sample.id


@pytest.mark.parametrize("target_size", [12, 28, 48])
def test_target_size_sets_the_glyph_size(target_size: int) -> None:
    sample = make_sample(SyntheticConfig(target_size=target_size), seed=3, index=0)
    assert sample.gt_box is not None
    x1, y1, x2, y2 = sample.gt_box
    assert max(x2 - x1, y2 - y1) == target_size


def test_difficulty_knobs_change_the_image() -> None:
    config = SyntheticConfig(
        width=1200, height=900, min_long_side=1000, landmarks=2, distractors=0, clutter=0
    )
    sample = make_sample(config, seed=1, index=0)
    assert sample.decode_image().size == (1200, 900)
    assert len(make_scene(config, sample_rng(1, 0)).landmarks) == 2
    assert len(set(sample.options)) == 4  # filled with unused letters


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"width": 1024, "height": 768}, "min_long_side"),
        ({"landmark_min_size": 300, "landmark_max_size": 200}, "landmark_min_size"),
        ({"width": 2000, "height": 400, "landmarks": 12}, "do not fit"),
        ({"target_size": 2}, "greater than or equal"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_config_rejects_bad_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SyntheticConfig(**fields)  # type: ignore[arg-type]


def test_cli_writes_a_readable_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synthetic"
    make_data.main(
        ["synthetic", "--out", str(out), "--num", "5", "--seed", "2", "--landmarks", "3"]
    )
    path = out / "data.parquet"
    assert count_samples(path) == 5
    assert list(iter_samples(path)) == list(generate(SyntheticConfig(landmarks=3), 5, 2))
    assert f"wrote 5 rows to {path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags", [["--landmarks", "99"], ["--seed", "-1"], ["--no-such-flag", "1"]]
)
def test_cli_rejects_bad_flags(tmp_path: Path, flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        make_data.main(["synthetic", "--out", str(tmp_path), "--num", "1", *flags])


def test_without_jitter_each_landmark_stands_centred_in_its_cell() -> None:
    config = SyntheticConfig(landmarks=2, landmark_jitter=False, landmark_max_size=400)
    cells = centred_boxes(config)
    assert len(cells) == 3 * 2  # 2048x1536 in cells of at least 400 + 2 * (12 + 2 * 28) px
    for cell, (x1, y1, x2, y2) in enumerate(cells):
        assert (x1 + x2) // 2 == (cell % 3) * 682 + 341 and (y1 + y2) // 2 == (
            cell // 3
        ) * 768 + 384
    for index in range(6):
        boxes = [lm.box for lm in make_scene(config, sample_rng(0, index)).landmarks]
        sides = {b[2] - b[0] for b in boxes}
        centred = {tuple(centred_boxes(config, side)) for side in sides}
        assert all(any(b in c for c in centred) for b in boxes), boxes
