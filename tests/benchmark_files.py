"""Writers of benchmark files in their public on-disk formats, for tests (nothing downloads).

A row is `(record, image bytes)`: the record holds every field as the benchmark stores it
except the image (V*: `record["image"]` is the relative path the bytes are written to; HR-Bench:
the bytes are stored base64-encoded in the `image` column). `core.benchmarks` reads them back.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

BenchmarkRow = tuple[dict[str, Any], bytes]

INSTRUCTION = "Answer with the option's letter from the given choices directly."

HRBENCH_SCHEMA = pa.schema(
    [("index", pa.int64()), ("image", pa.string()), ("question", pa.string())]
    + [(letter, pa.string()) for letter in "ABCD"]
    + [("answer", pa.string()), ("category", pa.string()), ("cycle_category", pa.string())]
)


def encoded_image(size: tuple[int, int], color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    """A plain image with a contrasting block in its top-left corner, encoded as `fmt`."""
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 0, 0), (0, 0, size[0] // 2, size[1] // 3))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_vstar(root: Path, rows: Sequence[BenchmarkRow]) -> Path:
    """`root/test_questions.jsonl` and the image files its records name."""
    lines = []
    for record, image in rows:
        if "image" in record:
            path = root / record["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
        lines.append(json.dumps(record) + "\n")
    file = root / "test_questions.jsonl"
    file.write_text("".join(lines), encoding="utf-8")
    return file


def write_hrbench(root: Path, rows: Sequence[BenchmarkRow], variant: str = "4k") -> Path:
    """`root/hr_bench_{variant}.parquet`, images base64 in the `image` column."""
    records = [{"image": base64.b64encode(image).decode("ascii"), **r} for r, image in rows]
    table = pa.Table.from_pylist(records, schema=HRBENCH_SCHEMA)
    file = root / f"hr_bench_{variant}.parquet"
    pq.write_table(table, file, row_group_size=3)
    return file
