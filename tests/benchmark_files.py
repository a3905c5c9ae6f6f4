"""Writers of benchmark files in their public on-disk formats, for tests (nothing downloads).

A row is `(record, image bytes)`: the record holds every field as the benchmark stores it
except the image (V*: `record["image"]` is the relative path the bytes are written to; HR-Bench:
the bytes are stored base64-encoded in the `image` column; MME-RealWorld-lite: base64 text in the
`bytes` column, as lmms-eval's shards hold it, or an older copy's `image` column).
`core.benchmarks` reads them back.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

BenchmarkRow = tuple[dict[str, Any], bytes]

INSTRUCTION = "Answer with the option's letter from the given choices directly."

# How an MME-RealWorld-lite shard stores its images: `bytes`, base64 text (lmms-eval's shards);
# older copies in `image`: HF's {"bytes", "path"} struct, raw bytes, or base64 text.
MMERWLLayout = Literal["bytes", "image_struct", "image_binary", "image_base64"]
MMERWL_TEXT_COLUMNS = ("question", "answer", "category", "l2-category")

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


def hrbench_copies(
    index: int, question: str, options: Sequence[str], answer: str, image: bytes, category: str
) -> list[BenchmarkRow]:
    """The four copies of one HR-Bench question, as HR-Bench asks it: copy k has the options
    shifted cyclically by k places (the answer letter follows its option), is in cycle
    `cycle_{k + 1}` and has index `index + 1000 * k`."""
    letters = "ABCD"
    rows = []
    for k in range(len(letters)):
        shifted = [options[(i - k) % len(options)] for i in range(len(options))]
        record = {"index": index + 1000 * k, "question": question, "category": category}
        record |= {"answer": letters[(letters.index(answer) + k) % len(letters)]}
        record |= {"cycle_category": f"cycle_{k + 1}"} | dict(zip(letters, shifted, strict=True))
        rows.append((record, image))
    return rows


def write_hrbench(root: Path, rows: Sequence[BenchmarkRow], variant: str = "4k") -> Path:
    """`root/hr_bench_{variant}.parquet`, images base64 in the `image` column."""
    records = [{"image": base64.b64encode(image).decode("ascii"), **r} for r, image in rows]
    table = pa.Table.from_pylist(records, schema=HRBENCH_SCHEMA)
    file = root / f"hr_bench_{variant}.parquet"
    pq.write_table(table, file, row_group_size=3)
    return file


def mmerwl_schema(layout: MMERWLLayout, id_columns: Sequence[str] = ("index",)) -> pa.Schema:
    """An MME-RealWorld-lite shard's columns: the ids, the image as `layout` stores it, the
    options list and the text columns (`image_path` too in lmms-eval's layout)."""
    image: list[tuple[str, pa.DataType]] = {
        "bytes": [("bytes", pa.string()), ("image_path", pa.string())],
        "image_struct": [("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))],
        "image_binary": [("image", pa.binary())],
        "image_base64": [("image", pa.string())],
    }[layout]
    ids = [(c, pa.int64() if c == "index" else pa.string()) for c in id_columns]
    options = [("multi-choice options", pa.list_(pa.string()))]
    return pa.schema(ids + image + options + [(c, pa.string()) for c in MMERWL_TEXT_COLUMNS])


def mmerwl_record(record: dict[str, Any], image: bytes, layout: MMERWLLayout) -> dict[str, Any]:
    """`record` with its image stored as `layout` stores it."""
    name = f"{record.get('index', 'x')}.jpg"
    if layout == "bytes":
        return {"bytes": base64.b64encode(image).decode("ascii"), "image_path": name, **record}
    if layout == "image_struct":
        return {"image": {"bytes": image, "path": name}, **record}
    if layout == "image_base64":
        return {"image": base64.b64encode(image).decode("ascii"), **record}
    return {"image": image, **record}


def write_mmerwl(
    root: Path,
    shards: Sequence[Sequence[BenchmarkRow]],
    layout: MMERWLLayout = "bytes",
    id_columns: Sequence[str] = ("index",),
) -> list[Path]:
    """`root/data/train-NNNNN-of-NNNNN.parquet`, one shard per list of rows."""
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, rows in enumerate(shards):
        records = [mmerwl_record(record, image, layout) for record, image in rows]
        table = pa.Table.from_pylist(records, schema=mmerwl_schema(layout, id_columns))
        files.append(folder / f"train-{number:05d}-of-{len(shards):05d}.parquet")
        pq.write_table(table, files[-1])
    return files
