"""Coarse-to-fine geometry: budgets, box parsing, mapping, cropping and fallbacks."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from core.geometry import (
    MIN_TOKENS,
    PATCH,
    GeometryError,
    ZoomParse,
    budget_tokens,
    check_box,
    fit_to_budget,
    integer_box,
    map_box,
    parse_zoom,
    resize_to_budget,
    vision_tokens,
    zoom,
)

sides = st.integers(min_value=1, max_value=20000)
caps = st.sampled_from([4, 16, 64, 256, 640, 1280, 16384])


def _aspect_ok(width: int, height: int) -> bool:
    return max(width, height) / min(width, height) <= 200


@given(width=sides, height=sides, cap=caps)
@settings(max_examples=500, deadline=None)
def test_resize_is_on_grid_and_within_cap(width: int, height: int, cap: int) -> None:
    assume(_aspect_ok(width, height))
    w, h = fit_to_budget(width, height, cap)
    assert w % PATCH == 0 and h % PATCH == 0
    assert w >= PATCH and h >= PATCH
    assert MIN_TOKENS <= (w // PATCH) * (h // PATCH) <= cap


@given(width=sides, height=sides, cap=caps)
@settings(max_examples=500, deadline=None)
def test_resize_equals_qwen_smart_resize_when_qwen_respects_the_budget(
    width: int, height: int, cap: int
) -> None:
    # Qwen rounds a side under 14.5 px to zero and then grows the image; ours keeps one patch.
    assume(_aspect_ok(width, height) and width > PATCH // 2 and height > PATCH // 2)
    qh, qw = smart_resize(height, width, PATCH, MIN_TOKENS * PATCH * PATCH, cap * PATCH * PATCH)
    assume(MIN_TOKENS * PATCH * PATCH <= qw * qh <= cap * PATCH * PATCH)
    assert fit_to_budget(width, height, cap) == (qw, qh)


def test_qwen_overshoots_where_ours_does_not() -> None:
    # 1 x 200 px strips at a 4-token cap: Qwen clamps the short side up to 28 px and exceeds.
    qh, qw = smart_resize(30, 6000, PATCH, MIN_TOKENS * PATCH * PATCH, 4 * PATCH * PATCH)
    assert (qw // PATCH) * (qh // PATCH) > 4
    w, h = fit_to_budget(6000, 30, 4)
    assert (w // PATCH) * (h // PATCH) <= 4


@pytest.mark.parametrize(
    ("width", "height", "cap"),
    [(0, 10, 64), (10, 0, 64), (-5, 10, 64), (201, 1, 64), (1, 20000, 1280), (100, 100, 3)],
)
def test_degenerate_sizes_and_budgets_raise(width: int, height: int, cap: int) -> None:
    with pytest.raises(GeometryError):
        fit_to_budget(width, height, cap)


def test_vision_tokens_needs_grid_sizes() -> None:
    assert vision_tokens(56, 84) == 6
    with pytest.raises(GeometryError):
        vision_tokens(50, 84)


@pytest.mark.parametrize(
    ("text", "box", "reason"),
    [
        ("<zoom>[1, 2, 3, 4]</zoom>", (1.0, 2.0, 3.0, 4.0), None),
        ("<think>x</think><zoom>[ 10 ,20,  30 , 40 ]</zoom>", (10.0, 20.0, 30.0, 40.0), None),
        ("<zoom>\n[1.5, 2.25, 3e1, 40.]\n</zoom>", (1.5, 2.25, 30.0, 40.0), None),
        ("<ZOOM>[1,2,3,4]</ZOOM>", (1.0, 2.0, 3.0, 4.0), None),
        ("<zoom>[0,0,5,5]</zoom> then <zoom>[1,1,9,9]</zoom>", (1.0, 1.0, 9.0, 9.0), None),
        ("no box here", None, "missing"),
        ("<zoom>1, 2, 3, 4</zoom>", None, "malformed"),
        ("<zoom>[1, 2, 3]</zoom>", None, "malformed"),
        ("<zoom>[1, 2, 3, 4, 5]</zoom>", None, "malformed"),
        ("<zoom>[a, 2, 3, 4]</zoom>", None, "malformed"),
        ("<zoom>[1, 2, 3, 4]", None, "missing"),
        ("<zoom>[nan, 2, 3, 4]</zoom>", None, "non_finite"),
        ("<zoom>[1, 2, inf, 4]</zoom>", None, "non_finite"),
        ("<zoom>[30, 2, 3, 4]</zoom>", None, "inverted"),
        ("<zoom>[3, 2, 3, 4]</zoom>", None, "degenerate"),
    ],
)
def test_parse_zoom(text: str, box: tuple | None, reason: str | None) -> None:
    parsed = parse_zoom(text)
    assert parsed.reason == reason
    if box is not None:
        assert parsed.box == box


boxes = st.tuples(*[st.floats(-1e4, 1e5, allow_nan=False)] * 4)


@given(box=boxes, ow=st.integers(28, 20000), oh=st.integers(28, 20000), cap=caps)
@settings(max_examples=300, deadline=None)
def test_mapped_box_lies_inside_the_original(box: tuple, ow: int, oh: int, cap: int) -> None:
    assume(_aspect_ok(ow, oh))
    coarse = fit_to_budget(ow, oh, cap)
    x1, y1, x2, y2 = map_box(box, coarse, (ow, oh))
    assert 0 <= x1 <= ow and 0 <= x2 <= ow and 0 <= y1 <= oh and 0 <= y2 <= oh
    if check_box(box) is None and x2 > x1 and y2 > y1:
        ix1, iy1, ix2, iy2 = integer_box((x1, y1, x2, y2), (ow, oh), PATCH)
        assert 0 <= ix1 < ix2 <= ow and 0 <= iy1 < iy2 <= oh
        assert ix1 <= x1 + 1e-6 and iy1 <= y1 + 1e-6  # never cuts the box
        assert ix2 >= x2 - 1e-6 and iy2 >= y2 - 1e-6
        assert ix2 - ix1 >= min(PATCH, ow) and iy2 - iy1 >= min(PATCH, oh)
        assert max(ix2 - ix1, iy2 - iy1) / min(ix2 - ix1, iy2 - iy1) <= 200


@given(ow=st.integers(28, 6000), oh=st.integers(28, 6000), cap=caps)
@settings(max_examples=100, deadline=None)
def test_full_coarse_box_crops_the_full_image(ow: int, oh: int, cap: int) -> None:
    assume(_aspect_ok(ow, oh))
    cw, ch = fit_to_budget(ow, oh, cap)
    mapped = map_box((0, 0, cw, ch), (cw, ch), (ow, oh))
    assert integer_box(mapped, (ow, oh), PATCH) == (0, 0, ow, oh)


def _image(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (200, 30, 30))


def test_zoom_crops_the_original_at_the_mapped_box() -> None:
    original = Image.new("RGB", (2000, 1000), "white")
    original.paste((0, 0, 255), (1000, 500, 1100, 600))  # a blue square
    coarse = fit_to_budget(2000, 1000, 64)
    sx, sy = coarse[0] / 2000, coarse[1] / 1000
    parsed = parse_zoom(f"<zoom>[{1000 * sx}, {500 * sy}, {1100 * sx}, {600 * sy}]</zoom>")
    view = zoom(original, coarse, parsed, max_tokens=64)
    assert view.fallback is None
    assert view.box == (1000, 500, 1100, 600)
    assert view.image.getpixel((view.image.width // 2, view.image.height // 2)) == (0, 0, 255)
    assert view.tokens <= 64


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nothing", "missing"),
        ("<zoom>[1, 2]</zoom>", "malformed"),
        ("<zoom>[nan, 1, 2, 3]</zoom>", "non_finite"),
        ("<zoom>[9, 9, 1, 1]</zoom>", "inverted"),
        ("<zoom>[5, 5, 5, 9]</zoom>", "degenerate"),
        ("<zoom>[5000, 5000, 6000, 6000]</zoom>", "outside"),
        ("<zoom>[-50, -50, -10, -1]</zoom>", "outside"),
    ],
)
def test_zoom_fallback_is_bounded_and_reported(text: str, reason: str) -> None:
    original = _image(3000, 2000)
    coarse = fit_to_budget(3000, 2000, 64)
    view = zoom(original, coarse, parse_zoom(text), max_tokens=64)
    assert view.fallback == reason
    assert view.box == (0, 0, 3000, 2000)
    assert view.tokens <= 64


def test_zoom_of_a_one_pixel_box_is_widened_and_upscaled_to_the_minimum() -> None:
    original = _image(3000, 2000)
    view = zoom(original, (3000, 2000), ZoomParse((10.0, 10.0, 11.0, 11.0)), max_tokens=64)
    assert view.fallback is None
    x1, y1, x2, y2 = view.box
    assert (x2 - x1, y2 - y1) == (PATCH, PATCH)
    assert view.tokens == MIN_TOKENS


def test_budget_tokens_of_a_large_image() -> None:
    assert budget_tokens(4000, 3000, 16384) <= 16384
    assert budget_tokens(4000, 3000, 1280) <= 1280
    assert math.isclose(budget_tokens(4000, 3000, 1280), 1280, rel_tol=0.05)


@pytest.mark.parametrize(
    ("width", "height", "cap"),
    [
        (2048, 1536, 64),
        (4000, 3000, 256),
        (1000, 7000, 128),
        (333, 77, 16),
        (20, 20, 64),
        (30, 5000, 64),
    ],
)
def test_token_counts_match_the_qwen_processor(
    tiny_processor, width: int, height: int, cap: int
) -> None:
    image = resize_to_budget(_image(width, height), cap)
    grid = tiny_processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    t, h, w = grid[0].tolist()
    assert t * h * w // 4 == vision_tokens(*image.size) == budget_tokens(width, height, cap)


def test_fallback_reuses_a_given_whole_view_of_the_right_size_only() -> None:
    original = _image(3000, 2000)
    coarse = resize_to_budget(original, 64)
    missing = parse_zoom("no box")
    assert zoom(original, coarse.size, missing, max_tokens=64, whole=coarse).image is coarse
    wrong = resize_to_budget(original, 16)
    view = zoom(original, coarse.size, missing, max_tokens=64, whole=wrong)
    assert view.image is not wrong and view.image.size == coarse.size
