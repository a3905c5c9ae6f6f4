"""Training data from public formats, into `Sample`s: HF parquet shards and JSON lines.

`convert_hf_parquet` reads one parquet file or the `*.parquet` files under a folder, as Hugging
Face `datasets` writes them (the image a `{bytes, path}` struct, raw bytes or base64 text).
`convert_jsonl` reads a JSON-lines file, or a `.json` file holding one array, whose records name
image files under an image root. `ColumnMap` says which column or key holds each field; boxes
are converted from their `BoxConvention` to `Sample.gt_box`, (x1, y1, x2, y2) in pixels.

Both stream (parquet one record batch at a time, JSON one record at a time) and yield, for each
row in order, its `Sample` or a `BadRow` naming the row and what is wrong with it. Unlike
`core.benchmarks`, a bad row does not stop the conversion: training data with a few broken rows
stays usable, and the caller counts and reports them. Only the input as a whole can fail: a
missing input raises `FileNotFoundError` when the converter is called; an unreadable parquet
file, a parquet file without a required column, or a `.json` file that is not one valid array
raises `SampleError` naming the file during iteration.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from core.benchmarks import iter_parquet_rows, normalize_answer_letter, strip_option_letters
from core.sample import OPTION_LETTERS, Box, Sample, SampleError, decode_image_bytes

logger = logging.getLogger(__name__)

BoxFormat = Literal["xyxy", "xywh"]
BoxUnits = Literal["pixels", "normalized", "normalized1000"]

# How far a box may reach beyond the image (a fraction of the side, at least 1 px) and still be
# read as sloppy annotation, clipped to the image, rather than as a wrong box.
BOX_SLACK = 0.01
BOX_SLACK_PX = 1.0

_JSON_CHUNK = 1 << 16  # characters of a `.json` array read at a time


class ColumnMap(BaseModel):
    """The column (parquet) or key (JSON) holding each field; "" leaves an optional one unused."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    image: str = "image"
    """the image: HF's {bytes, path} struct, bytes or base64 (parquet); a file path (JSON)"""
    question: str = "question"
    """the question text"""
    options: str = "options"
    """a list of option texts, "(A) " / "A. " prefixes allowed"""
    answer: str = "answer"
    """an option letter, or the exact text of one option"""
    box: str = "bbox"
    """optional: four numbers read by the box convention; absent or null: no gt_box"""
    id: str = "id"
    """optional: the sample id; absent: the file name and row number"""
    category: str = "category"
    """optional: the sample category; absent: empty"""


class BoxConvention(BaseModel):
    """How a row's four box numbers are to be read."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    format: BoxFormat = "xyxy"
    """xyxy: (x1, y1, x2, y2); xywh: (x, y, width, height) from the top-left corner"""
    units: BoxUnits = "pixels"
    """pixels; normalized: fractions 0..1 of the image side; normalized1000: 0..1000"""


class ConvertConfig(BaseModel):
    """Everything a converter needs besides its input."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    columns: ColumnMap = ColumnMap()
    """where each field is"""
    box: BoxConvention = BoxConvention()
    """how boxes are written"""
    source: str = ""
    """the `source` field of every sample"""
    batch_size: int = Field(default=8, ge=1)
    """parquet rows read at a time (rows hold whole images, so keep it small)"""


@dataclass(frozen=True)
class BadRow:
    """A row that could not be converted: where it is, its id if it has one, and why."""

    location: str  # "FILE row N" (parquet, from 0), "FILE line N" (from 1), "FILE element N"
    reason: str
    id: str | None = None

    @property
    def name(self) -> str:
        """How reports name the row: its id, or its location when it has none."""
        return self.location if self.id is None else self.id

    def to_record(self) -> dict[str, str | None]:
        return {"id": self.id, "location": self.location, "reason": self.reason}


def convert_hf_parquet(path: str | Path, config: ConvertConfig) -> Iterator[Sample | BadRow]:
    """The rows of a parquet file, or of every `*.parquet` file under a folder (sorted by path)."""
    return _iter_hf_parquet(parquet_inputs(Path(path)), config)


def convert_jsonl(
    path: str | Path, image_root: str | Path | None, config: ConvertConfig
) -> Iterator[Sample | BadRow]:
    """The records of a JSON-lines file (a `.json` file: one array); image paths are relative
    to `image_root` (default: the file's folder). Blank lines are not rows."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"input file {file} does not exist")
    root = file.parent if image_root is None else Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} does not exist")
    return _iter_json(file, root, config)


def split_bad_rows(
    rows: Iterable[Sample | BadRow], on_bad: Callable[[BadRow], None]
) -> Iterator[Sample]:
    """The samples among `rows`; each bad row is handed to `on_bad` as it is met."""
    for row in rows:
        if isinstance(row, BadRow):
            on_bad(row)
        else:
            yield row


def parquet_inputs(path: Path) -> list[Path]:
    """`path` itself, or the `*.parquet` files anywhere under the folder `path`, sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} does not exist")
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"input folder {path} holds no .parquet files")
    return files


def hf_row_sample(row: Mapping[str, Any], config: ConvertConfig, fallback_id: str) -> Sample:
    """One parquet row as a `Sample`; raises `SampleError` saying what is wrong."""
    column = config.columns.image
    image = image_bytes(row.get(column), column)
    return _sample(row, image, f"field {column!r}", config, fallback_id)


def json_record_sample(
    record: Mapping[str, Any], image_root: Path, config: ConvertConfig, fallback_id: str
) -> Sample:
    """One JSON record as a `Sample`, its image read from `image_root`; raises `SampleError`."""
    name = _text(record, config.columns.image)
    file = image_root / name
    if not file.is_file():
        raise SampleError(f"image file {name} does not exist")
    try:
        image = file.read_bytes()
    except OSError as exc:
        raise SampleError(f"cannot read image file {name} ({exc.strerror or exc})") from exc
    return _sample(record, image, f"image file {name}", config, fallback_id)


def image_bytes(value: object, column: str) -> bytes:
    """Encoded image bytes from HF's {"bytes", "path"} struct, raw bytes or base64 text (a
    `data:` URI prefix allowed)."""
    if isinstance(value, Mapping):
        if value.get("bytes") is None:
            raise SampleError(f"field {column!r} holds no bytes (path {value.get('path')!r})")
        value = value["bytes"]
    if value is None:
        raise SampleError(f"field {column!r} is missing")
    if isinstance(value, str):
        if value.startswith("data:"):
            value = value.partition(",")[2]
        try:
            return base64.b64decode(value)
        except (binascii.Error, ValueError) as exc:
            raise SampleError(f"field {column!r} is not valid base64 ({exc})") from exc
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise SampleError(f"field {column!r} should be image bytes, got {type(value).__name__}")


def to_gt_box(value: object, size: tuple[int, int], convention: BoxConvention) -> Box | None:
    """`value`, four numbers in `convention`, as (x1, y1, x2, y2) in pixels of an image of
    `size` (width, height), clipped to it; None when `value` is None.

    Raises `SampleError` unless `value` is four finite numbers making a box with area that
    reaches beyond the image by at most `BOX_SLACK` of a side (and at least `BOX_SLACK_PX`).
    """
    if value is None:
        return None
    a, b, c, d = _four_numbers(value)
    if convention.format == "xywh":
        c, d = a + c, b + d
    width, height = size
    scale_x, scale_y = _unit_scale(convention.units, size)
    x1, y1, x2, y2 = a * scale_x, b * scale_y, c * scale_x, d * scale_y
    if x2 <= x1 or y2 <= y1:
        raise SampleError(f"box {value!r} ({convention.format}) has no area")
    slack_x = max(BOX_SLACK_PX, BOX_SLACK * width)
    slack_y = max(BOX_SLACK_PX, BOX_SLACK * height)
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    beyond = x1 < -slack_x or y1 < -slack_y or x2 > width + slack_x or y2 > height + slack_y
    if beyond or clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        pixels = f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        raise SampleError(f"box {value!r} = {pixels} px lies outside the {width}x{height} image")
    return clipped


def answer_letter(answer: str, raw_options: Sequence[str], options: Sequence[str]) -> str:
    """The letter of the option that `answer` names: as a letter ("B", "(b)") or as the exact
    text of one option, with or without its prefix ("blue", "(B) blue"). An answer naming no
    option, or naming different options as a letter and as a text, raises `SampleError`."""
    letters = {
        OPTION_LETTERS[index]
        for index, (raw, text) in enumerate(zip(raw_options, options, strict=True))
        if answer in (raw.strip(), text)
    }
    with contextlib.suppress(SampleError):  # not a letter of these options: the texts decide
        letters.add(normalize_answer_letter(answer, len(options)))
    if not letters:
        allowed = ", ".join(OPTION_LETTERS[: len(options)])
        raise SampleError(f"answer {answer!r} is neither a letter {allowed} nor an option's text")
    if len(letters) > 1:
        raise SampleError(f"answer {answer!r} is ambiguous: options {', '.join(sorted(letters))}")
    return letters.pop()


def _iter_hf_parquet(files: list[Path], config: ConvertConfig) -> Iterator[Sample | BadRow]:
    columns = config.columns
    wanted = list(columns.model_dump().values())
    to_sample = functools.partial(hf_row_sample, config=config)
    for file in files:
        _check_columns(file, columns)
        for row_index, row in iter_parquet_rows(file, wanted, config.batch_size):
            where = f"{file} row {row_index}"
            yield _convert(row, where, f"{file.stem}_{row_index}", to_sample, columns.id)


def _iter_json(file: Path, root: Path, config: ConvertConfig) -> Iterator[Sample | BadRow]:
    values = _iter_json_array(file) if file.suffix == ".json" else _iter_json_lines(file)
    to_sample = functools.partial(json_record_sample, image_root=root, config=config)
    for where, number, value in values:
        yield _convert(value, where, f"{file.stem}_{number}", to_sample, config.columns.id)


def _convert(
    row: object,
    where: str,
    fallback_id: str,
    to_sample: Callable[..., Sample],
    id_column: str,
) -> Sample | BadRow:
    """`to_sample(record, fallback_id=...)`, or the `BadRow` saying why it failed."""
    try:
        if isinstance(row, _Undecodable):
            raise SampleError(row.reason)
        if not isinstance(row, Mapping):
            raise SampleError(f"expected a JSON object, got {type(row).__name__}")
        return to_sample(row, fallback_id=fallback_id)
    except SampleError as exc:
        return BadRow(where, str(exc), _usable_id(row, id_column))


def _check_columns(file: Path, columns: ColumnMap) -> None:
    """A required column missing from the file is a wrong mapping, not a bad row: it raises."""
    try:
        names = pq.read_schema(file).names
    except pa.ArrowException as exc:
        raise SampleError(f"{file}: cannot be read as parquet ({exc})") from exc
    required = (columns.image, columns.question, columns.options, columns.answer)
    missing = [column for column in required if column not in names]
    if missing:
        raise SampleError(f"{file} has no column {missing[0]!r} (its columns: {names})")
    for column in (columns.box, columns.id, columns.category):
        if column and column not in names:
            logger.warning("%s has no column %r; the field takes its default", file, column)


def _sample(
    row: Mapping[str, Any], image: bytes, image_name: str, config: ConvertConfig, fallback_id: str
) -> Sample:
    columns = config.columns
    if not image:
        raise SampleError(f"{image_name} is empty")
    size = decode_image_bytes(image, where=image_name).size
    raw_options = _option_list(row, columns.options)
    options = strip_option_letters(raw_options)
    return Sample(
        id=_identifier(row, columns.id) or fallback_id,
        image=image,
        question=_text(row, columns.question),
        options=options,
        answer=answer_letter(_text(row, columns.answer), raw_options, options),
        gt_box=to_gt_box(row.get(columns.box), size, config.box),
        category=_optional_text(row, columns.category),
        source=config.source,
    )


def _four_numbers(value: object) -> tuple[float, float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise SampleError(f"box {value!r} should be a list of four numbers")
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise SampleError(f"box {value!r} should be a list of four numbers")
        if not math.isfinite(number):
            raise SampleError(f"box {value!r} holds a number that is not finite")
    return (float(value[0]), float(value[1]), float(value[2]), float(value[3]))


def _unit_scale(units: BoxUnits, size: tuple[int, int]) -> tuple[float, float]:
    width, height = size
    if units == "normalized":
        return float(width), float(height)
    if units == "normalized1000":
        return width / 1000, height / 1000
    return 1.0, 1.0


def _option_list(row: Mapping[str, Any], key: str) -> list[str]:
    value = row.get(key)
    if value is None:
        raise SampleError(f"field {key!r} is missing")
    if not isinstance(value, list | tuple):
        raise SampleError(f"field {key!r} should be a list, got {type(value).__name__}")
    return list(value)


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise SampleError(f"field {key!r} is missing")
    if not isinstance(value, str):
        raise SampleError(f"field {key!r} should be text, got {type(value).__name__}")
    if not value.strip():
        raise SampleError(f"field {key!r} is empty")
    return value.strip()


def _optional_text(row: Mapping[str, Any], key: str) -> str:
    return "" if row.get(key) is None else _text(row, key)


def _identifier(row: Mapping[str, Any], key: str) -> str | None:
    """The row's id as text, None when it has none; an id that is there but unusable raises."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise SampleError(f"field {key!r} is not a usable id: {value!r}")
    return str(value).strip()


def _usable_id(row: object, key: str) -> str | None:
    if not isinstance(row, Mapping):
        return None
    try:
        return _identifier(row, key)
    except SampleError:
        return None


@dataclass(frozen=True)
class _Undecodable:
    """A JSON line that does not parse: a bad row, not a failed file."""

    reason: str


def _iter_json_lines(file: Path) -> Iterator[tuple[str, int, object]]:
    """(location, line number, value or `_Undecodable`) for each non-blank line."""
    with file.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value: object = json.loads(line)
            except ValueError as exc:  # bad JSON or bad UTF-8
                value = _Undecodable(f"not valid JSON ({exc})")
            yield f"{file} line {number}", number, value


def _iter_json_array(file: Path) -> Iterator[tuple[str, int, object]]:
    """(location, index, value) for each element of the array that is the whole file."""
    with file.open(encoding="utf-8-sig") as stream:
        try:
            for index, value in enumerate(_JsonArrayReader(stream, file).elements()):
                yield f"{file} element {index}", index, value
        except UnicodeDecodeError as exc:
            raise SampleError(f"{file}: not valid UTF-8 ({exc})") from exc


class _JsonArrayReader:
    """Decodes the elements of one JSON array from a text stream, a chunk at a time, so that
    the file is never held whole. A broken array cannot be resynchronised: it raises."""

    def __init__(self, stream: TextIO, file: Path) -> None:
        self.stream = stream
        self.file = file
        self.text = ""
        self.position = 0
        self.ended = False
        self.decoder = json.JSONDecoder()

    def elements(self) -> Iterator[object]:
        if self._next_char() != "[":
            raise SampleError(f"{self.file}: a .json input must hold one JSON array")
        self.position += 1
        if self._next_char() == "]":
            self.position += 1
        else:
            yield from self._items()
        if self._next_char():
            raise SampleError(f"{self.file}: text follows the array")

    def _items(self) -> Iterator[object]:
        for index in itertools.count():
            yield self._value(index)
            mark = self._next_char()
            self.position += 1
            if mark == "]":
                return
            if mark != ",":
                raise SampleError(f"{self.file}: expected ',' or ']' after element {index}")

    def _value(self, index: int) -> object:
        self._next_char()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.position)
                if end < len(self.text) or self.ended:  # else it may go on in the next chunk
                    self.position = end
                    return value
            except json.JSONDecodeError as exc:
                if self.ended:
                    raise SampleError(
                        f"{self.file} element {index}: not valid JSON ({exc})"
                    ) from exc
            self._fill()

    def _next_char(self) -> str:
        """The next character that is not white space ("" at the end), not consumed."""
        while True:
            while self.position < len(self.text) and self.text[self.position] in " \t\r\n":
                self.position += 1
            if self.position < len(self.text):
                return self.text[self.position]
            if not self._fill():
                return ""

    def _fill(self) -> bool:
        chunk = self.stream.read(_JSON_CHUNK)
        if not chunk:
            self.ended = True
            return False
        self.text = self.text[self.position :] + chunk
        self.position = 0
        return True
