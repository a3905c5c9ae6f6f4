"""Readers for the public high-resolution benchmarks, in their on-disk formats, into `Sample`s.

V* Bench (a jsonl file plus image files), HR-Bench (one parquet file per resolution, images as
base64 JPEG) and MME-RealWorld-lite (the parquet shards of lmms-eval's copy, images as base64
text in a `bytes` column; older copies hold an HF image struct in `image`) are read as
generators: jsonl line by line and parquet one record batch at a time, so no file is ever held
whole in memory. Every row becomes one multiple-choice `Sample` (answer = option letter) or
raises `SampleError` naming the file, the row (jsonl: 1-based line number; parquet: 0-based row
index within the file) and what is wrong; rows are never skipped. Images are validated by
decoding them, but the original encoded bytes are kept. A missing benchmark file raises
`FileNotFoundError` naming the path as soon as the loader is called, before iteration.

HR-Bench asks every question several times, its options cyclically shifted; `hrbench_copy_key`
names the question a row is a copy of and `hrbench_cycle` the pass (shift) it belongs to, for the
eval job's cyclic scores.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

import pyarrow as pa

from core.dataset import open_parquet
from core.sample import OPTION_LETTERS, Sample, SampleError, decode_image_bytes

logger = logging.getLogger(__name__)

BenchmarkName = Literal["vstar", "hrbench_4k", "hrbench_8k", "mmerwl"]
BENCHMARKS: tuple[str, ...] = get_args(BenchmarkName)
HRBenchVariant = Literal["4k", "8k"]

VSTAR_FILE = "test_questions.jsonl"
HRBENCH_OPTION_COLUMNS = ("A", "B", "C", "D")
HRBENCH_CYCLE_COLUMN = "cycle_category"  # the pass of the benchmark, one shift of the options
MMERWL_IMAGE_COLUMNS = ("bytes", "image")  # lmms-eval's base64 text; HF's image struct
MMERWL_OPTIONS_COLUMN = "multi-choice options"
MMERWL_ID_COLUMNS = ("question_id", "index")  # the first one present names the sample

# An option prefix: "(A) text", or "A. text" / "A) text" (these need a space after the mark so
# that a question line such as "A.M. or P.M.?" is not read as an option).
_PAREN_OPTION = re.compile(r"\(([A-Z])\)\s*(.*)", re.DOTALL)
_DOT_OPTION = re.compile(r"([A-Z])[.)]\s+(.*)", re.DOTALL)
_ANSWER_LETTER = re.compile(r"(?:\(([A-Za-z])\)|([A-Za-z])\)?)\.?")
_SHARD_NAME = re.compile(r"train-(\d{5})-of-(\d{5})\.parquet")


def load_benchmark(name: BenchmarkName, root: str | Path) -> Iterator[Sample]:
    """The samples of benchmark `name` stored under `root`, in file order."""
    if name == "vstar":
        return load_vstar(root)
    if name == "hrbench_4k":
        return load_hrbench(root, "4k")
    if name == "hrbench_8k":
        return load_hrbench(root, "8k")
    if name == "mmerwl":
        return load_mmerwl(root)
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def load_vstar(root: str | Path) -> Iterator[Sample]:
    """V* Bench: `root/test_questions.jsonl`, image paths relative to `root`."""
    root = Path(root)
    file = root / VSTAR_FILE
    if not file.is_file():
        raise FileNotFoundError(f"V* Bench question file {file} does not exist")
    return _iter_vstar(file, root)


def load_hrbench(
    root: str | Path, variant: HRBenchVariant, batch_size: int = 8
) -> Iterator[Sample]:
    """HR-Bench: `root/hr_bench_{variant}.parquet` (`variant` is "4k" or "8k")."""
    if variant not in get_args(HRBenchVariant):
        raise ValueError(f"HR-Bench variant {variant!r} is not one of {get_args(HRBenchVariant)}")
    file = Path(root) / f"hr_bench_{variant}.parquet"
    if not file.is_file():
        raise FileNotFoundError(f"HR-Bench file {file} does not exist")
    return _iter_hrbench(file, variant, batch_size)


def load_mmerwl(root: str | Path, batch_size: int = 8) -> Iterator[Sample]:
    """MME-RealWorld-lite: the shards `root/data/train-NNNNN-of-NNNNN.parquet`, in shard order."""
    shards = mmerwl_shards(Path(root))
    return _iter_mmerwl(shards, batch_size)


def split_vstar_text(text: str) -> tuple[str, tuple[str, ...]]:
    """Split V*'s `text` into the question and the option texts.

    The lines before the first option line ("(A) red" or "A. red") are the question; the option
    lines must follow one another with letters A, B, C, ...; the lines after them (the answering
    instruction, e.g. "Answer with the option's letter from the given choices directly.") are
    dropped. Blank lines are ignored.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if _match_option(line)), None)
    if first is None:
        raise SampleError("text has no option lines such as '(A) ...'")
    question = "\n".join(lines[:first])
    if not question:
        raise SampleError("text has no question before its options")
    options: list[str] = []
    rest = lines[first:]
    while rest and _match_option(rest[0]):
        options.append(parse_option(rest.pop(0), len(options)))
    stray = next((line for line in rest if _match_option(line)), None)
    if stray is not None:
        raise SampleError(f"option line {stray!r} is separated from the other options")
    return question, tuple(options)


def strip_option_letters(options: Sequence[str]) -> tuple[str, ...]:
    """Option texts without their "(A) " / "A. " prefixes (letters must run A, B, C, ...)."""
    if not options:
        raise SampleError("there are no options")
    return tuple(parse_option(option, position) for position, option in enumerate(options))


def parse_option(option: str, position: int) -> str:
    """The text of the option at `position` (0 for A); its letter prefix, if any, must match."""
    if not isinstance(option, str):
        raise SampleError(f"option {position} should be text, got {type(option).__name__}")
    match = _match_option(option.strip())
    if match is None:
        text = option.strip()
    else:
        letter, text = match
        expected = OPTION_LETTERS[position] if position < len(OPTION_LETTERS) else "?"
        if letter != expected:
            raise SampleError(f"option {option!r} is lettered {letter!r}, expected {expected!r}")
    if not text:
        raise SampleError(f"option {position} ({option!r}) has no text")
    return text


def normalize_answer_letter(answer: str, n_options: int) -> str:
    """The answer as one upper-case letter ("(b)" -> "B"); it must name one of the options."""
    match = _ANSWER_LETTER.fullmatch(answer.strip())
    if match is None:
        raise SampleError(f"answer {answer!r} is not an option letter")
    letter = (match.group(1) or match.group(2)).upper()
    if OPTION_LETTERS.index(letter) >= n_options:
        allowed = ", ".join(OPTION_LETTERS[:n_options])
        raise SampleError(f"answer {answer!r} is not one of the option letters {allowed}")
    return letter


def mmerwl_shards(root: Path) -> list[Path]:
    """The shards under `root/data`, checked complete (every NNNNN of the stated total)."""
    folder = root / "data"
    if not folder.is_dir():
        raise FileNotFoundError(f"MME-RealWorld-lite shard folder {folder} does not exist")
    found: dict[tuple[int, int], Path] = {}
    for path in folder.glob("train-*-of-*.parquet"):
        match = _SHARD_NAME.fullmatch(path.name)
        if match is not None:
            found[(int(match.group(1)), int(match.group(2)))] = path
    if not found:
        raise FileNotFoundError(f"{folder} holds no shards named train-NNNNN-of-NNNNN.parquet")
    totals = {total for _, total in found}
    if len(totals) != 1:
        names = sorted(path.name for path in found.values())
        raise ValueError(f"shards in {folder} disagree on their count: {names}")
    total = totals.pop()
    for index in range(total):
        if (index, total) not in found:
            missing = folder / f"train-{index:05d}-of-{total:05d}.parquet"
            raise FileNotFoundError(f"MME-RealWorld-lite shard {missing} does not exist")
    extra = sorted(path.name for (index, _), path in found.items() if index >= total)
    if extra:
        raise ValueError(f"shards in {folder} beyond the stated count {total}: {extra}")
    return [found[(index, total)] for index in range(total)]


def _iter_vstar(file: Path, root: Path) -> Iterator[Sample]:
    count = 0
    for line_number, record in _iter_jsonl(file):
        with _located(f"{file} line {line_number}"):
            sample = vstar_sample(record, root)
        yield sample
        count += 1
    logger.info("read %d V* Bench samples from %s", count, file)


def vstar_sample(record: Mapping[str, Any], root: Path) -> Sample:
    question, options = split_vstar_text(_text(record, "text"))
    image_path = _text(record, "image")
    return Sample(
        id=f"vstar_{_identifier(record, 'question_id')}",
        question=question,
        options=options,
        answer=normalize_answer_letter(_text(record, "label"), len(options)),
        category=_text(record, "category"),
        source="vstar",
        image=_checked_image(_read_image_file(root / image_path), f"image {image_path!r}"),
    )


def _iter_hrbench(file: Path, variant: HRBenchVariant, batch_size: int) -> Iterator[Sample]:
    columns = ("index", "image", "question", *HRBENCH_OPTION_COLUMNS, "answer", "category")
    count = 0
    for row_index, row in iter_parquet_rows(file, columns, batch_size):
        with _located(f"{file} row {row_index}"):
            sample = hrbench_sample(row, variant)
        yield sample
        count += 1
    logger.info("read %d HR-Bench samples from %s", count, file)


def hrbench_sample(row: Mapping[str, Any], variant: HRBenchVariant) -> Sample:
    options = tuple(_text(row, column) for column in HRBENCH_OPTION_COLUMNS)
    return Sample(
        id=f"hrbench_{variant}_{_identifier(row, 'index')}",
        question=_text(row, "question"),
        options=options,
        answer=normalize_answer_letter(_text(row, "answer"), len(options)),
        category=_text(row, "category"),
        source=f"hrbench_{variant}",
        image=_checked_image(_image_bytes(row.get("image"), "image"), "field 'image'"),
    )


def hrbench_copy_key(row: Mapping[str, Any]) -> str:
    """The key that the cyclically shifted copies of one HR-Bench question share: a hash of the
    question text, the SET of option texts (their order is what the copies shift) and the
    decoded image bytes. Computed from whatever the row holds, so that an unreadable copy still
    joins its question (a missing field counts as empty; undecodable base64 is hashed as is)."""
    options = sorted(_loose_text(row.get(column)) for column in HRBENCH_OPTION_COLUMNS)
    try:
        image = _image_bytes(row.get("image"), "image")
    except SampleError:
        image = repr(row.get("image")).encode()
    digest = hashlib.sha256()
    for part in (_loose_text(row.get("question")), *options):
        digest.update(part.encode() + b"\x1f")
    digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()[:16]


def hrbench_cycle(row: Mapping[str, Any]) -> str | None:
    """The row's `cycle_category` (the pass it belongs to), None when the file has none."""
    value = row.get(HRBENCH_CYCLE_COLUMN)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _iter_mmerwl(shards: list[Path], batch_size: int) -> Iterator[Sample]:
    fields = ("question", MMERWL_OPTIONS_COLUMN, "answer", "category")
    columns = (*MMERWL_ID_COLUMNS, *MMERWL_IMAGE_COLUMNS, *fields)
    for file in shards:
        count = 0
        for row_index, row in iter_parquet_rows(file, columns, batch_size):
            with _located(f"{file} row {row_index}"):
                sample = mmerwl_sample(row, f"mmerwl_{file.stem}_{row_index}")
            yield sample
            count += 1
        logger.info("read %d MME-RealWorld-lite samples from %s", count, file)


def mmerwl_sample(row: Mapping[str, Any], fallback_id: str) -> Sample:
    id_column = next((column for column in MMERWL_ID_COLUMNS if column in row), None)
    raw_options = row.get(MMERWL_OPTIONS_COLUMN)
    if raw_options is None:
        raise SampleError(f"field {MMERWL_OPTIONS_COLUMN!r} is missing")
    if not isinstance(raw_options, list):
        kind = type(raw_options).__name__
        raise SampleError(f"field {MMERWL_OPTIONS_COLUMN!r} should be a list, got {kind}")
    options = strip_option_letters(raw_options)
    return Sample(
        id=fallback_id if id_column is None else f"mmerwl_{_identifier(row, id_column)}",
        question=_text(row, "question"),
        options=options,
        answer=normalize_answer_letter(_text(row, "answer"), len(options)),
        category=_text(row, "category"),
        source="mmerwl",
        image=mmerwl_image(row),
    )


def mmerwl_image(row: Mapping[str, Any]) -> bytes:
    """The image of an MME-RealWorld-lite row: its `bytes` field (base64 text, as lmms-eval's
    shards store it, or raw bytes), else its `image` field (HF's {"bytes", "path"} struct, raw
    bytes or base64), decoded to check it."""
    for column in MMERWL_IMAGE_COLUMNS:
        if row.get(column) is not None:
            return _checked_image(_image_bytes(row[column], column), f"field {column!r}")
    present = [column for column in MMERWL_IMAGE_COLUMNS if column in row]
    if present:
        raise SampleError(f"field {present[0]!r} is missing")
    raise SampleError("field 'bytes' is missing (and there is no 'image' field)")


def _iter_jsonl(file: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with file.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            with _located(f"{file} line {line_number}"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SampleError(f"not valid JSON ({exc})") from exc
                if not isinstance(record, dict):
                    raise SampleError(f"expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def iter_parquet_rows(
    file: Path, columns: Sequence[str], batch_size: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, row) pairs, reading only `columns` (those the file has) one batch at a time."""
    try:
        parquet = open_parquet(file)
    except pa.ArrowException as exc:
        raise SampleError(f"{file}: cannot be read as parquet ({exc})") from exc
    with parquet:
        present = [column for column in columns if column in parquet.schema_arrow.names]
        row_index = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=present or None):
            for row in batch.to_pylist():
                yield row_index, row
                row_index += 1


@contextmanager
def _located(where: str) -> Iterator[None]:
    """Prefix the message of a `SampleError` raised inside with `where` (file and row)."""
    try:
        yield
    except SampleError as exc:
        raise SampleError(f"{where}: {exc}") from exc


def _match_option(line: str) -> tuple[str, str] | None:
    match = _PAREN_OPTION.fullmatch(line) or _DOT_OPTION.fullmatch(line)
    return None if match is None else (match.group(1), match.group(2).strip())


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise SampleError(f"field {key!r} is missing")
    if not isinstance(value, str):
        raise SampleError(f"field {key!r} should be text, got {type(value).__name__}")
    if not value.strip():
        raise SampleError(f"field {key!r} is empty")
    return value.strip()


def _identifier(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise SampleError(f"field {key!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise SampleError(f"field {key!r} is not a usable id: {value!r}")
    return str(value).strip()


def _image_bytes(value: object, field: str) -> bytes:
    """Encoded image bytes from raw bytes, base64 text or HF's {"bytes": ..., "path": ...}."""
    if isinstance(value, dict):
        if value.get("bytes") is None:
            raise SampleError(f"field {field!r} holds no bytes (path {value.get('path')!r})")
        value = value["bytes"]
    if value is None:
        raise SampleError(f"field {field!r} is missing")
    if isinstance(value, str):
        try:
            return base64.b64decode(value)
        except (binascii.Error, ValueError) as exc:
            raise SampleError(f"field {field!r} is not valid base64 ({exc})") from exc
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    kind = type(value).__name__
    raise SampleError(f"field {field!r} should be bytes or base64 text, got {kind}")


def _loose_text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _read_image_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SampleError(f"cannot read image file {path} ({exc.strerror or exc})") from exc


def _checked_image(data: bytes, what: str) -> bytes:
    if not data:
        raise SampleError(f"{what} is empty")
    decode_image_bytes(data, where=what)
    return data
