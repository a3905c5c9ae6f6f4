"""The eval job's input: a benchmark's rows as `Sample`s, or as failures that still count.

`core.benchmarks` reads each benchmark in its public format and raises on the first bad row
(right for training data). An evaluation must instead score every row: a row that cannot be
read (a corrupt image, a missing field) is a wrong answer, listed by id. So this module walks
the same files row by row with the same per-row parsers and turns a `SampleError` into a
`RowFailure` carrying the row's id and category where they can be read. Each row comes as an
`EvalRow` that also names the groups it is scored in: on HR-Bench, the question whose shifted
copies it belongs to and its cycle (see `jobs/eval_report.py`). `synthetic` is any dataset in our
own parquet format (`python -m jobs.make_data synthetic --out DIR`).
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
    hrbench_copy_key,
    hrbench_cycle,
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


@dataclass(frozen=True)
class EvalRow:
    """One benchmark row to score: its sample (or why it cannot be read) and, on HR-Bench, the
    groups it is scored with."""

    item: EvalItem
    question_group: str | None = None  # shared by the cyclically shifted copies of a question
    cycle: str | None = None  # the pass of the benchmark (one shift of every question's options)


RowGroups = Callable[[Mapping[str, Any]], tuple[str | None, str | None]]  # row -> (group, cycle)


def benchmark_name(dataset: EvalDataset, hrbench_variant: HRBenchVariant) -> str:
    """The name reports use: `hrbench` becomes `hrbench_4k` or `hrbench_8k`."""
    return f"hrbench_{hrbench_variant}" if dataset == "hrbench" else dataset


def eval_rows(
    dataset: EvalDataset, root: str | Path, hrbench_variant: HRBenchVariant = "4k"
) -> Iterator[EvalRow]:
    """Every row of the benchmark under `root`, in file order: a sample or a failure, with the
    groups it is scored in."""
    root = Path(root)
    if dataset == "vstar":
        return _vstar_items(root)
    if dataset == "hrbench":
        file = root / f"hr_bench_{hrbench_variant}.parquet"
        if not file.is_file():
            raise FileNotFoundError(f"HR-Bench file {file} does not exist")

        def hrbench(row: Mapping[str, Any], _file: Path, _index: int) -> Sample:
            return hrbench_sample(row, hrbench_variant)

        prefix = f"hrbench_{hrbench_variant}_"
        return _parquet_items([file], hrbench, prefix, ("index",), _hrbench_groups)
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


def _vstar_items(root: Path) -> Iterator[EvalRow]:
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
                yield EvalRow(vstar_sample(record, root))
            except (SampleError, json.JSONDecodeError) as exc:
                where = f"{file} line {number}"
                failure = _failure(
                    record, "vstar_", ("question_id",), f"line{number}", f"{where}: {exc}"
                )
                yield EvalRow(failure)


RowParser = Callable[[Mapping[str, Any], Path, int], Sample]  # (row, file, row index)


def _mmerwl(row: Mapping[str, Any], file: Path, index: int) -> Sample:
    return mmerwl_sample(row, f"mmerwl_{file.stem}_{index}")  # the loader's id for id-less rows


def _own_format(row: Mapping[str, Any], _file: Path, _index: int) -> Sample:
    return Sample.from_row(dict(row))


def _hrbench_groups(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return hrbench_copy_key(row), hrbench_cycle(row)


def _no_groups(_row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return None, None


def _parquet_items(
    files: list[Path],
    parse: RowParser,
    prefix: str,
    id_columns: tuple[str, ...],
    groups: RowGroups = _no_groups,
) -> Iterator[EvalRow]:
    """Rows of parquet files, each parsed by `parse` or turned into a failure; `groups` reads
    the row's groups from the raw row, so that a failure keeps them too."""
    for file in files:
        for index, row in iter_parquet_rows(file, _all_columns(file), batch_size=8):
            item: EvalItem
            try:
                item = parse(row, file, index)
            except (SampleError, KeyError, TypeError, ValueError) as exc:
                fallback = f"{file.stem}_row{index}"
                item = _failure(row, prefix, id_columns, fallback, f"{file} row {index}: {exc}")
            yield EvalRow(item, *groups(row))


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
