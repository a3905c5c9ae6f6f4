"""The eval job's input: a benchmark's rows as `Sample`s, or as failures that still count.

`core.benchmarks` reads each benchmark in its public format and raises on the first bad row
(right for training data). An evaluation must instead score every row: a row that cannot be
read (a corrupt image, a missing field) is a wrong answer, listed by id. So this module walks
the same files row by row with the same per-row parsers and turns a `SampleError` into a
`RowFailure` carrying the row's id and category where they can be read. `synthetic` is any
dataset in our own parquet format (`python -m jobs.make_data synthetic --out DIR`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

# The public loaders' per-row parsers: the same rules, applied one row at a time here.
from core.benchmarks import (
    MMERWL_ID_COLUMNS,
    VSTAR_FILE,
    HRBenchVariant,
    hrbench_sample,
    iter_parquet_rows,
    mmerwl_sample,
    mmerwl_shards,
    vstar_sample,
)
from core.dataset import parquet_files
from core.sample import Sample, SampleError

logger = logging.getLogger(__name__)

EvalDataset = Literal["vstar", "hrbench", "mmerwl", "synthetic"]
UNREADABLE = "unreadable"  # the category of a row whose category cannot be read


@dataclass(frozen=True)
class RowFailure:
    """A row that could not be read: scored as a wrong answer, listed by `id`."""

    id: str
    category: str
    answer: str
    reason: str


EvalItem = Sample | RowFailure


def benchmark_name(dataset: EvalDataset, hrbench_variant: HRBenchVariant) -> str:
    """The name reports use: `hrbench` becomes `hrbench_4k` or `hrbench_8k`."""
    return f"hrbench_{hrbench_variant}" if dataset == "hrbench" else dataset


def eval_items(
    dataset: EvalDataset, root: str | Path, hrbench_variant: HRBenchVariant = "4k"
) -> Iterator[EvalItem]:
    """Every row of the benchmark under `root`, in file order, as a sample or a failure."""
    root = Path(root)
    if dataset == "vstar":
        return _vstar_items(root)
    if dataset == "hrbench":
        file = root / f"hr_bench_{hrbench_variant}.parquet"
        if not file.is_file():
            raise FileNotFoundError(f"HR-Bench file {file} does not exist")

        def hrbench(row: Mapping[str, Any], _file: Path, _index: int) -> Sample:
            return hrbench_sample(row, hrbench_variant)

        return _parquet_items([file], hrbench, f"hrbench_{hrbench_variant}_", ("index",))
    if dataset == "mmerwl":
        return _parquet_items(mmerwl_shards(root), _mmerwl, "mmerwl_", MMERWL_ID_COLUMNS)
    return _parquet_items(parquet_files(root), _own_format, "", ("id",))


def count_rows(dataset: EvalDataset, root: str | Path, hrbench_variant: HRBenchVariant) -> int:
    """Rows the benchmark holds (from parquet metadata; V*: non-blank lines), for progress."""
    root = Path(root)
    if dataset == "vstar":
        with (root / VSTAR_FILE).open(encoding="utf-8") as lines:
            return sum(1 for line in lines if line.strip())
    if dataset == "hrbench":
        files = [root / f"hr_bench_{hrbench_variant}.parquet"]
    elif dataset == "mmerwl":
        files = mmerwl_shards(root)
    else:
        files = parquet_files(root)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _vstar_items(root: Path) -> Iterator[EvalItem]:
    file = root / VSTAR_FILE
    if not file.is_file():
        raise FileNotFoundError(f"V* Bench question file {file} does not exist")
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record: Any = None
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise SampleError(f"expected a JSON object, got {type(record).__name__}")
                yield vstar_sample(record, root)
            except (SampleError, json.JSONDecodeError) as exc:
                where = f"{file} line {number}"
                yield _failure(
                    record, "vstar_", ("question_id",), f"line{number}", f"{where}: {exc}"
                )


RowParser = Callable[[Mapping[str, Any], Path, int], Sample]  # (row, file, row index)


def _mmerwl(row: Mapping[str, Any], file: Path, index: int) -> Sample:
    return mmerwl_sample(row, f"mmerwl_{file.stem}_{index}")  # the loader's id for id-less rows


def _own_format(row: Mapping[str, Any], _file: Path, _index: int) -> Sample:
    return Sample.from_row(dict(row))


def _parquet_items(
    files: list[Path], parse: RowParser, prefix: str, id_columns: tuple[str, ...]
) -> Iterator[EvalItem]:
    """Rows of parquet files, each parsed by `parse` or turned into a failure."""
    for file in files:
        for index, row in iter_parquet_rows(file, _all_columns(file), batch_size=8):
            try:
                yield parse(row, file, index)
            except (SampleError, KeyError, TypeError, ValueError) as exc:
                fallback = f"{file.stem}_row{index}"
                yield _failure(row, prefix, id_columns, fallback, f"{file} row {index}: {exc}")


def _all_columns(file: Path) -> list[str]:
    return list(pq.ParquetFile(file).schema_arrow.names)


def _failure(
    record: Any, prefix: str, id_columns: tuple[str, ...], fallback_id: str, reason: str
) -> RowFailure:
    """The failure of an unreadable row, named by its own id when that field is readable."""
    fields: Mapping[str, Any] = record if isinstance(record, dict) else {}
    ids = [fields.get(c) for c in id_columns]
    raw_id = next((v for v in ids if isinstance(v, int | str) and str(v).strip()), None)
    category = fields.get("category")
    answer = fields.get("answer", fields.get("label"))
    logger.warning("unreadable row, counted as wrong: %s", reason)
    return RowFailure(
        id=f"{prefix}{raw_id}" if raw_id is not None else f"{prefix}{fallback_id}",
        category=category if isinstance(category, str) and category.strip() else UNREADABLE,
        answer=answer if isinstance(answer, str) else "",
        reason=reason,
    )
