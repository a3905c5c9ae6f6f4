"""Drawing primitives of the synthetic tasks: filled shapes, glyphs and fine stripes.

Everything draws palette indices into "P" mode images (no anti-aliasing), so that every pixel
is one colour of the caller's palette.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Shape = Literal["circle", "square", "triangle", "diamond", "hexagon", "star"]
SHAPES: tuple[Shape, ...] = ("circle", "square", "triangle", "diamond", "hexagon", "star")
IntBox = tuple[int, int, int, int]

Orientation = Literal["horizontal", "vertical", "rising diagonal", "falling diagonal"]
ORIENTATIONS: tuple[Orientation, ...] = (
    "horizontal",
    "vertical",
    "rising diagonal",
    "falling diagonal",
)


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, box: IntBox, colour: int) -> None:
    """Fill `shape` inscribed in `box` with palette index `colour`."""
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon(_polygon(shape, box), fill=colour)


def _polygon(shape: Shape, box: IntBox) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if shape == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    if shape == "hexagon":
        angles, radii = np.deg2rad(np.arange(0, 360, 60)), np.ones(6)
    else:  # star: 10 points, alternating radius
        angles = np.deg2rad(np.arange(-90, 270, 36))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    xs, ys = cx + radii * rx * np.cos(angles), cy + radii * ry * np.sin(angles)
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]


def draw_striped_shape(
    image: Image.Image,
    shape: Shape,
    box: IntBox,
    orientation: Orientation,
    period: int,
    inks: tuple[int, int, int],
) -> None:
    """Fill `shape` in `box` with stripes of `orientation` inside a solid rim.

    `inks` are (dark band, light band, rim); the rim's colour should be the bands' mean. Bands
    repeat every `period` pixels along each image axis they cross (diagonal bands are thus
    narrower by sqrt 2): whole-pixel periods keep the pattern free of moire below its own
    frequency. Half of the striped core is each band whatever the orientation, and the rim,
    `period` pixels wide, keeps the outline alike for every orientation: once downsampling
    averages the bands away, next to nothing of the orientation is left.
    """
    x1, y1, x2, y2 = box
    size = (x2 - x1 + 1, y2 - y1 + 1)  # PIL's shapes include their last row and column
    inside = Image.new("L", size, 0)
    draw_shape(ImageDraw.Draw(inside), shape, (0, 0, size[0] - 1, size[1] - 1), 255)
    core = _erode(np.asarray(inside), period)
    ys, xs = np.mgrid[y1 : y2 + 1, x1 : x2 + 1]
    across = {
        "horizontal": ys,
        "vertical": xs,
        "rising diagonal": xs + ys,
        "falling diagonal": xs - ys,
    }[orientation]
    dark = np.mod(across, period) < period / 2
    image.paste(inks[2], (x1, y1), inside)
    image.paste(inks[0], (x1, y1), Image.fromarray(np.where(dark, core, 0).astype(np.uint8)))
    image.paste(inks[1], (x1, y1), Image.fromarray(np.where(dark, 0, core).astype(np.uint8)))


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` eroded by a square of side 2 * radius + 1 (separable: rows, then columns)."""
    for axis in (0, 1):
        pad = [(radius, radius) if a == axis else (0, 0) for a in range(2)]
        windows = np.lib.stride_tricks.sliding_window_view(
            np.pad(mask, pad), 2 * radius + 1, axis=axis
        )
        mask = windows.min(axis=-1)
    return mask


@functools.lru_cache(maxsize=512)
def glyph_mask(letter: str, size: int) -> Image.Image:
    """A binary mask ("L", 0/255) of `letter`, cropped to its ink, longest side exactly `size`.

    Rendered large and scaled down so that every glyph has the same, exact longest side.
    Callers must not modify the returned (cached) image.
    """
    font = ImageFont.load_default(size=200)
    canvas = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(canvas).text((50, 20), letter, fill=255, font=font)
    ink = canvas.crop(canvas.getbbox())
    scale = size / max(ink.size)
    resized = ink.resize(
        (max(1, round(ink.width * scale)), max(1, round(ink.height * scale))),
        Image.Resampling.LANCZOS,
    )
    return resized.point(lambda v: 255 if v >= 128 else 0)
