"""Parquet storage for `Sample`s, written and read in record batches (streaming).

A dataset is one parquet file or a folder of them with `SAMPLE_SCHEMA`. Neither writing nor
reading holds more than one batch of rows in memory, so datasets of any length work.
`row_groups` and `read_row_group` give random access one row group at a time (for the shuffled
reader of the train job, `core.stream`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from core.sample import SAMPLE_SCHEMA, Sample, SampleError


def write_samples(path: str | Path, samples: Iterable[Sample], batch_size: int = 64) -> int:
    """Stream `samples` into one parquet file; returns how many rows were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with pq.ParquetWriter(path, SAMPLE_SCHEMA) as writer:
        batch: list[Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == batch_size:
                writer.write_table(_to_table(batch), row_group_size=batch_size)
                written += len(batch)
                batch = []
        if batch:
            writer.write_table(_to_table(batch), row_group_size=batch_size)
            written += len(batch)
    return written


def iter_samples(path: str | Path, batch_size: int = 64) -> Iterator[Sample]:
    """Yield the samples of a parquet file or folder in order, one record batch at a time.

    A row that does not make a valid `Sample` raises `SampleError` naming the file and row.
    """
    for file in parquet_files(Path(path)):
        row_index = 0
        for batch in open_parquet(file).iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield row_to_sample(row, file, row_index)
                row_index += 1


def count_samples(path: str | Path) -> int:
    """Number of rows, from parquet metadata only."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(Path(path)))


@dataclass(frozen=True)
class RowGroup:
    """Where one parquet row group lies: its file, its index there, its first row in the file
    and its number of rows."""

    file: Path
    index: int
    first_row: int
    num_rows: int


def row_groups(path: str | Path) -> list[RowGroup]:
    """Every non-empty row group of a parquet file or folder, in reading order, from metadata."""
    groups = []
    for file in parquet_files(Path(path)):
        metadata = pq.ParquetFile(file).metadata
        first_row = 0
        for index in range(metadata.num_row_groups):
            num_rows = metadata.row_group(index).num_rows
            if num_rows:
                groups.append(RowGroup(file, index, first_row, num_rows))
            first_row += num_rows
    return groups


def read_row_group(group: RowGroup, reader: pq.ParquetFile | None = None) -> list[dict[str, Any]]:
    """The rows of one row group, undecoded (`row_to_sample` makes each a `Sample`). `reader`,
    an open `open_parquet(group.file)`, saves parsing the file's footer again."""
    if reader is not None:
        return reader.read_row_group(group.index).to_pylist()
    with open_parquet(group.file) as opened:
        return opened.read_row_group(group.index).to_pylist()


def row_to_sample(row: dict[str, Any], file: Path, index: int) -> Sample:
    """Row `index` of `file` as a `Sample`; a bad row raises `SampleError` naming both."""
    try:
        return Sample.from_row(row)
    except (KeyError, TypeError, SampleError) as exc:
        raise SampleError(f"{file} row {index}: {exc}") from exc


def open_parquet(file: Path) -> pq.ParquetFile:
    # pre_buffer (the default) reads the whole file up front; off, memory stays one batch deep.
    return pq.ParquetFile(file, pre_buffer=False)


def parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {path} does not exist")
    files = [Path(f) for f in pads.dataset(path, format="parquet").files]
    if not files:
        raise FileNotFoundError(f"dataset folder {path} holds no parquet files")
    return sorted(files)


def _to_table(samples: list[Sample]) -> pa.Table:
    return pa.Table.from_pylist([s.to_row() for s in samples], schema=SAMPLE_SCHEMA)
