"""Synthetic high-resolution tasks: read a fine detail of a named large landmark.

Each image shows several LARGE coloured shapes ("landmarks", e.g. a blue triangle) on a pale,
lightly textured background with medium grey clutter and stray distractor glyphs. A small
letter is drawn right next to EVERY landmark; the question names one landmark and asks for its
letter. The options are that letter plus the letters of the other landmarks, so the answer
cannot be guessed from the coarse view: at the demo's coarse budget a glyph is a dot of a few
pixels, while the landmarks stay obvious. The policy must use the landmark as context, zoom
next to it, and read the glyph in the crop: the coarse-to-fine skill ERGO trains.

`task = "stripes"` asks instead which way the thin stripes filling the named landmark run. Each
landmark of an image has its own orientation, and half of every striped core is each band colour,
so the coarse view shows four evenly tinted shapes: the stripes (period 6 px) are averaged away
by the downsampling, and only a crop near the landmark's own size resolves them.

`generate(config, num, seed)` is a lazy generator; sample i depends only on (seed, i), so any
slice of a dataset can be produced alone and the same seed always gives identical bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.drawing import (
    ORIENTATIONS,
    SHAPES,
    IntBox,
    Orientation,
    Shape,
    draw_shape,
    draw_striped_shape,
    glyph_mask,
)
from core.sample import OPTION_LETTERS, Sample, encode_png

DEMO_COARSE_TOKENS = 64  # the demo's coarse-view budget; the crop gets the same budget
CATEGORY = "glyph_next_to_landmark"
STRIPES_CATEGORY = "stripes_in_landmark"
SOURCE = "synthetic"
# Glyph letters: no A-D (they name the options) and no I, O, Q (easily confused with 1, 0, O).
GLYPH_LETTERS = "EFGHJKLMNPRSTUVWXYZ"
# zlib level 6 halves palette PNGs against level 1 for ~12 ms more per default image.
PNG_COMPRESS_LEVEL = 6

LANDMARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "blue": (36, 76, 214),
    "green": (28, 150, 58),
    "yellow": (232, 186, 0),
    "orange": (240, 120, 16),
    "purple": (132, 48, 176),
}
BACKGROUNDS = ((236, 236, 230), (241, 236, 224), (228, 233, 238), (233, 238, 229))
CLUTTER_COLOURS = ((168, 168, 168), (190, 182, 166), (150, 158, 166), (200, 200, 196))
GLYPH_COLOUR = (18, 18, 18)


def _tint(colour: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """`colour` mixed with white, `share` of it white."""
    r, g, b = (round(c + share * (255 - c)) for c in colour)
    return (r, g, b)


# A striped landmark: bands of its colour and of a light tint, inside a rim of their mean.
STRIPE_INKS = {name: (c, _tint(c, 0.6), _tint(c, 0.3)) for name, c in LANDMARK_COLOURS.items()}


def _shade(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return (colour[0] - 10, colour[1] - 10, colour[2] - 10)


# Images are drawn in this fixed palette ("P" mode): no anti-aliasing, so every pixel is one of
# these colours, and palette PNGs encode several times faster and smaller than RGB ones.
PALETTE = (
    *BACKGROUNDS,
    *(_shade(c) for c in BACKGROUNDS),
    *CLUTTER_COLOURS,
    *LANDMARK_COLOURS.values(),
    GLYPH_COLOUR,
    *(ink for name in LANDMARK_COLOURS for ink in STRIPE_INKS[name][1:]),
)
_PALETTE_INDEX = {colour: index for index, colour in enumerate(PALETTE)}


class SyntheticConfig(BaseModel):
    """Difficulty knobs of the synthetic tasks (all sizes in original pixels)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    task: Literal["glyph", "stripes"] = "glyph"
    """`glyph`: the letter next to the named landmark; `stripes`: the orientation of the thin
    stripes filling it (docs/stripes_task.md)."""
    stripe_period: int = Field(default=6, ge=2, le=256)
    """stripes: one dark and one light band, measured across the stripes."""

    width: int = Field(default=2048, ge=256, le=16384)
    """Image width."""
    height: int = Field(default=1536, ge=256, le=16384)
    """Image height."""
    min_long_side: int = Field(default=2000, ge=0)
    """The longer image side must be at least this; keeps the task high-resolution."""
    target_size: int = Field(default=28, ge=6, le=256)
    """Longest side of every glyph (the target and the distractor glyphs)."""
    landmarks: int = Field(default=4, ge=1, le=12)
    """Large landmarks per image, each with its own glyph; the question names one."""
    landmark_min_size: int = Field(default=200, ge=16)
    """Smallest landmark side."""
    landmark_max_size: int = Field(default=300, ge=16)
    """Largest landmark side."""
    landmark_jitter: bool = True
    """Place each landmark at random inside its grid cell; false: centred in it."""
    glyph_gap: int = Field(default=12, ge=0, le=256)
    """Gap between a landmark's bounding box and its glyph."""
    distractors: int = Field(default=12, ge=0, le=500)
    """Stray glyphs drawn far from every landmark (they look like the target when coarse)."""
    clutter: int = Field(default=30, ge=0, le=1000)
    """Medium shapes and strokes in muted colours scattered outside the landmark zones."""
    clutter_max_size: int = Field(default=140, ge=8, le=2048)
    """Largest clutter side; the smallest is a third of it."""
    texture_lines: int = Field(default=8, ge=0, le=200)
    """Faint lines across the background (light texture)."""
    num_options: int = Field(default=4, ge=2, le=8)
    """Lettered options per question (the answer plus distractor letters)."""

    @model_validator(mode="after")
    def _check_layout(self) -> Self:
        if max(self.width, self.height) < self.min_long_side:
            raise ValueError(
                f"image {self.width}x{self.height}: long side under min_long_side "
                f"{self.min_long_side}"
            )
        if self.landmark_min_size > self.landmark_max_size:
            raise ValueError("landmark_min_size is larger than landmark_max_size")
        cols, rows = landmark_grid(self)
        if cols * rows < self.landmarks:
            raise ValueError(
                f"{self.landmarks} landmarks do not fit: the image holds a {cols}x{rows} grid of "
                f"{_cell_side(self)}-px landmark cells"
            )
        if self.landmarks > len(LANDMARK_COLOURS) * len(SHAPES):
            raise ValueError("more landmarks than distinct (colour, shape) names")
        if self.task == "stripes" and self.num_options > len(ORIENTATIONS):
            raise ValueError(
                f"num_options {self.num_options}: the stripes task has {len(ORIENTATIONS)}"
            )
        return self


def _cell_side(config: SyntheticConfig) -> int:
    """Smallest cell that holds a landmark, its glyph on any side, and a margin."""
    return config.landmark_max_size + 2 * (config.glyph_gap + 2 * config.target_size)


def landmark_grid(config: SyntheticConfig) -> tuple[int, int]:
    """(columns, rows) of the grid whose cells hold at most one landmark each."""
    side = _cell_side(config)
    return config.width // side, config.height // side


@dataclass(frozen=True)
class Landmark:
    colour: str
    shape: Shape
    box: IntBox
    glyph: str
    glyph_box: IntBox
    orientation: Orientation | None  # stripes task only

    @property
    def name(self) -> str:
        return f"the large {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Everything drawn in one image, in drawing order (background first)."""

    background: tuple[int, int, int]
    lines: tuple[tuple[IntBox, tuple[int, int, int]], ...]
    clutter: tuple[tuple[Shape, IntBox, tuple[int, int, int]], ...]
    landmarks: tuple[Landmark, ...]
    distractors: tuple[tuple[str, IntBox], ...]


def generate(config: SyntheticConfig, num: int, seed: int) -> Iterator[Sample]:
    """Yield `num` samples lazily; sample i depends only on (seed, i)."""
    if num < 0 or seed < 0:
        raise ValueError(f"num ({num}) and seed ({seed}) must be non-negative")
    for index in range(num):
        yield make_sample(config, seed, index)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample `index`: a function of (seed, index) alone."""
    return np.random.default_rng([seed, index])


def make_sample(config: SyntheticConfig, seed: int, index: int) -> Sample:
    """The `index`-th sample of the dataset with this seed."""
    rng = sample_rng(seed, index)
    scene = make_scene(config, rng)
    target = scene.landmarks[int(rng.integers(len(scene.landmarks)))]
    if config.task == "stripes":
        assert target.orientation is not None
        options: list[str] = _stripe_options(config, target.orientation, rng)
        answer: str = target.orientation
        box, category = target.box, STRIPES_CATEGORY
        question = f"Which way do the thin stripes inside {target.name} run?"
    else:
        options = _options(config, scene, target, rng)
        answer, box, category = target.glyph, target.glyph_box, CATEGORY
        question = f"Which letter is written next to {target.name}?"
    return Sample(
        id=f"synthetic-{seed}-{index}",
        image=encode_png(render(config, scene), compress_level=PNG_COMPRESS_LEVEL),
        question=question,
        options=tuple(options),
        answer=OPTION_LETTERS[options.index(answer)],
        gt_box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        category=category,
        source=SOURCE,
    )


def _stripe_options(
    config: SyntheticConfig, answer: Orientation, rng: np.random.Generator
) -> list[str]:
    """The answer and `num_options - 1` other orientations, always in `ORIENTATIONS` order: the
    letter names the orientation, so reading the crop is the whole skill (a small model
    cannot also learn to look the letter up in a shuffled list)."""
    others = [o for o in ORIENTATIONS if o != answer]
    chosen = {answer, *(others[i] for i in rng.permutation(len(others))[: config.num_options - 1])}
    return [o for o in ORIENTATIONS if o in chosen]


def _options(
    config: SyntheticConfig, scene: Scene, target: Landmark, rng: np.random.Generator
) -> list[str]:
    """The target's glyph, the other landmarks' glyphs first, then unused letters; shuffled."""
    others = [lm.glyph for lm in scene.landmarks if lm is not target]
    rng.shuffle(others)
    unused = [c for c in GLYPH_LETTERS if c != target.glyph and c not in others]
    rng.shuffle(unused)
    options = [target.glyph, *(others + unused)[: config.num_options - 1]]
    rng.shuffle(options)
    return options


def make_scene(config: SyntheticConfig, rng: np.random.Generator) -> Scene:
    """Lay out one image: landmarks in distinct grid cells, then texture, clutter, distractors."""
    landmarks = _landmarks(config, rng)
    pad = config.glyph_gap + 2 * config.target_size
    zones = [_expand(lm.box, pad) for lm in landmarks]
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    lines = tuple(_texture_line(config, rng, background) for _ in range(config.texture_lines))
    clutter = []
    for _ in range(config.clutter):
        side = int(rng.integers(config.clutter_max_size // 3, config.clutter_max_size + 1))
        box = _free_box(config, rng, (side, side), zones)
        if box is not None:
            colour = CLUTTER_COLOURS[int(rng.integers(len(CLUTTER_COLOURS)))]
            clutter.append((SHAPES[int(rng.integers(len(SHAPES)))], box, colour))
    far_zones = [_expand(lm.box, 2 * pad) for lm in landmarks]
    distractors = []
    for _ in range(config.distractors):
        letter = GLYPH_LETTERS[int(rng.integers(len(GLYPH_LETTERS)))]
        box = _free_box(config, rng, glyph_mask(letter, config.target_size).size, far_zones)
        if box is not None:
            distractors.append((letter, box))
            far_zones.append(_expand(box, config.target_size // 2))  # keep glyphs apart
    return Scene(background, lines, tuple(clutter), landmarks, tuple(distractors))


def centred_boxes(config: SyntheticConfig, side: int | None = None) -> list[IntBox]:
    """A square of `side` (default: the largest landmark) centred in each landmark cell, in
    row-major order: where a landmark stands when `landmark_jitter` is off."""
    cols, rows = landmark_grid(config)
    cell_w, cell_h = config.width // cols, config.height // rows
    side = side or config.landmark_max_size
    boxes = []
    for cell in range(cols * rows):
        x = (cell % cols) * cell_w + (cell_w - side) // 2
        y = (cell // cols) * cell_h + (cell_h - side) // 2
        boxes.append((x, y, x + side, y + side))
    return boxes


def _landmarks(config: SyntheticConfig, rng: np.random.Generator) -> tuple[Landmark, ...]:
    cols, rows = landmark_grid(config)
    cell_w, cell_h = config.width // cols, config.height // rows
    cells = rng.choice(cols * rows, size=config.landmarks, replace=False)
    names = rng.choice(len(LANDMARK_COLOURS) * len(SHAPES), size=config.landmarks, replace=False)
    letters = rng.choice(len(GLYPH_LETTERS), size=config.landmarks, replace=False)
    pad = config.glyph_gap + 2 * config.target_size
    landmarks = []
    for cell, name, letter_index in zip(cells, names, letters, strict=True):
        side = int(rng.integers(config.landmark_min_size, config.landmark_max_size + 1))
        x0 = int(cell % cols) * cell_w + pad
        y0 = int(cell // cols) * cell_h + pad
        if config.landmark_jitter:
            x = x0 + int(rng.integers(0, cell_w - side - 2 * pad + 1))
            y = y0 + int(rng.integers(0, cell_h - side - 2 * pad + 1))
            box = (x, y, x + side, y + side)
        else:
            box = centred_boxes(config, side)[int(cell)]
        letter = GLYPH_LETTERS[int(letter_index)]
        colour = list(LANDMARK_COLOURS)[int(name) // len(SHAPES)]
        shape = SHAPES[int(name) % len(SHAPES)]
        glyph_box = _beside(box, glyph_mask(letter, config.target_size).size, config, rng)
        landmarks.append(Landmark(colour, shape, box, letter, glyph_box, None))
    if config.task == "stripes":  # distinct orientations: the others tell nothing
        order = rng.permutation(len(ORIENTATIONS))
        landmarks = [
            dataclasses.replace(lm, orientation=ORIENTATIONS[order[i % len(order)]])
            for i, lm in enumerate(landmarks)
        ]
    return tuple(landmarks)


def _beside(
    box: IntBox, size: tuple[int, int], config: SyntheticConfig, rng: np.random.Generator
) -> IntBox:
    """A glyph box on a random side of `box`, `glyph_gap` away, near the middle of that side."""
    x1, y1, x2, y2 = box
    gw, gh = size
    gap = config.glyph_gap
    shift = int(rng.integers(-(x2 - x1) // 4, (x2 - x1) // 4 + 1))
    cx, cy = (x1 + x2) // 2 + shift - gw // 2, (y1 + y2) // 2 + shift - gh // 2
    side = int(rng.integers(4))
    if side == 0:  # right
        x, y = x2 + gap, cy
    elif side == 1:  # left
        x, y = x1 - gap - gw, cy
    elif side == 2:  # below
        x, y = cx, y2 + gap
    else:  # above
        x, y = cx, y1 - gap - gh
    return (x, y, x + gw, y + gh)


def _free_box(
    config: SyntheticConfig,
    rng: np.random.Generator,
    size: tuple[int, int],
    zones: list[IntBox],
    attempts: int = 20,
) -> IntBox | None:
    """A random box of `size` inside the image that meets none of `zones`, or None."""
    w, h = size
    for _ in range(attempts):
        x = int(rng.integers(0, config.width - w + 1))
        y = int(rng.integers(0, config.height - h + 1))
        box = (x, y, x + w, y + h)
        if not any(_overlaps(box, zone) for zone in zones):
            return box
    return None


def _texture_line(
    config: SyntheticConfig, rng: np.random.Generator, colour: tuple[int, int, int]
) -> tuple[IntBox, tuple[int, int, int]]:
    shade = _shade(colour)
    if rng.integers(2):
        y = int(rng.integers(config.height))
        return (0, y, config.width, y), shade
    x = int(rng.integers(config.width))
    return (x, 0, x, config.height), shade


def render(config: SyntheticConfig, scene: Scene) -> Image.Image:
    """Draw a scene as a palette ("P" mode) image of `PALETTE` colours; `.convert("RGB")` it
    for pixel values (decoding the PNG gives RGB directly)."""
    ink = _PALETTE_INDEX.__getitem__
    image = Image.new("P", (config.width, config.height), ink(scene.background))
    image.putpalette([value for colour in PALETTE for value in colour])
    draw = ImageDraw.Draw(image)
    for line, colour in scene.lines:
        draw.line(line, fill=ink(colour), width=3)
    for shape, box, colour in scene.clutter:
        draw_shape(draw, shape, box, ink(colour))
    for landmark in scene.landmarks:
        fill = ink(LANDMARK_COLOURS[landmark.colour])
        if landmark.orientation is None:
            draw_shape(draw, landmark.shape, landmark.box, fill)
        else:
            period = config.stripe_period
            dark, light, rim = STRIPE_INKS[landmark.colour]
            inks = (ink(dark), ink(light), ink(rim))
            draw_striped_shape(
                image, landmark.shape, landmark.box, landmark.orientation, period, inks
            )
    glyphs = [(lm.glyph, lm.glyph_box) for lm in scene.landmarks if config.task == "glyph"]
    glyphs += scene.distractors
    for letter, box in glyphs:
        image.paste(ink(GLYPH_COLOUR), box, glyph_mask(letter, config.target_size))
    return image


def _expand(box: IntBox, pad: int) -> IntBox:
    return (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)


def _overlaps(a: IntBox, b: IntBox) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
