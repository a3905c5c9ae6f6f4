"""The data contract: one question about one high-resolution image.

Every dataset (synthetic, V*, HR-Bench, MME-RealWorld) is read into `Sample`s, and every
stored dataset is a parquet file with the columns of `SAMPLE_SCHEMA` (image bytes inline).
"""

from __future__ import annotations

import io
import math
import string
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from PIL import Image

# (x1, y1, x2, y2) in pixels of the ORIGINAL image; x to the right, y down.
Box = tuple[float, float, float, float]

OPTION_LETTERS = string.ascii_uppercase

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("gt_box", pa.list_(pa.float64()), nullable=True),  # 4 numbers or null
        pa.field("category", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


class SampleError(ValueError):
    """A sample (or the row it came from) is malformed; the message names where."""


@dataclass(frozen=True)
class Sample:
    """One question about one image.

    `image` holds the encoded bytes (PNG or JPEG) so that samples stay cheap to move and
    store; `decode_image` opens them. `options` are the texts of the lettered choices
    (A, B, ...) or empty for free-form questions; `answer` is then a letter or free text.
    """

    id: str
    image: bytes
    question: str
    options: tuple[str, ...]
    answer: str
    gt_box: Box | None = None
    category: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            raise SampleError("sample has an empty id")
        if not self.image:
            raise SampleError(f"sample {self.id!r}: image bytes are empty")
        if len(self.options) > len(OPTION_LETTERS):
            raise SampleError(f"sample {self.id!r}: {len(self.options)} options is too many")
        if self.gt_box is not None:
            _check_box(self.id, self.gt_box)

    @property
    def is_multiple_choice(self) -> bool:
        return len(self.options) > 0

    def decode_image(self) -> Image.Image:
        """The image as RGB; raises `SampleError` naming the sample if it cannot be decoded."""
        return decode_image_bytes(self.image, where=f"sample {self.id!r}")

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": self.image,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "gt_box": None if self.gt_box is None else list(self.gt_box),
            "category": self.category,
            "source": self.source,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        box = row.get("gt_box")
        return cls(
            id=row["id"],
            image=row["image"],
            question=row["question"],
            options=tuple(row["options"]),
            answer=row["answer"],
            gt_box=None if box is None else _as_box(row["id"], box),
            category=row.get("category") or "",
            source=row.get("source") or "",
        )


def decode_image_bytes(data: bytes, where: str) -> Image.Image:
    """Decode and fully load image bytes; a corrupt image raises `SampleError` naming `where`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad data
        raise SampleError(f"{where}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _as_box(sample_id: str, values: Any) -> Box:
    if len(values) != 4:
        raise SampleError(f"sample {sample_id!r}: gt_box {values!r} needs four numbers")
    return (float(values[0]), float(values[1]), float(values[2]), float(values[3]))


def _check_box(sample_id: str, box: Box) -> None:
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise SampleError(f"sample {sample_id!r}: gt_box {box!r} needs four finite numbers")
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise SampleError(f"sample {sample_id!r}: gt_box {box!r} has no area")
