"""Parquet storage for `Sample`s, written and read in record batches (streaming).

A dataset is one parquet file or a folder of them with `SAMPLE_SCHEMA`. Neither writing nor
reading holds more than one batch of rows in memory, so datasets of any length work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

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
                yield _row_to_sample(row, file, row_index)
                row_index += 1


def count_samples(path: str | Path) -> int:
    """Number of rows, from parquet metadata only."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(Path(path)))


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


def _row_to_sample(row: dict, file: Path, index: int) -> Sample:
    try:
        return Sample.from_row(row)
    except (KeyError, TypeError, SampleError) as exc:
        raise SampleError(f"{file} row {index}: {exc}") from exc


def _to_table(samples: list[Sample]) -> pa.Table:
    return pa.Table.from_pylist([s.to_row() for s in samples], schema=SAMPLE_SCHEMA)
