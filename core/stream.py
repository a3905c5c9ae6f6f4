"""Training data read on demand: samples at cursor positions, in a seeded shuffle per epoch.

The train job never holds its dataset. It keeps an integer cursor (samples drawn so far, stored
in every checkpoint) and asks a `SampleSource` for the samples at positions `[cursor, cursor +
size)`. Position p lies in epoch `p // len(source)`; which sample it names is a function of
(seed, p) alone, so a resumed run draws exactly what the uninterrupted run would have drawn.

- `SyntheticSource` renders sample i of the synthetic task when asked (`make_sample`), in a
  seeded permutation of all indices per epoch.
- `ShuffledParquet` knows a parquet dataset by its metadata only (rows per row group). Each
  epoch it permutes the row groups, cuts that order into windows of `window` row groups, and
  permutes the rows inside each window. Positions walk the windows in order, so an epoch reads
  each row group once and at most `window` row groups are held decoded at a time.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import pyarrow.parquet as pq

from core.dataset import RowGroup, open_parquet, read_row_group, row_groups, row_to_sample
from core.sample import Sample
from core.synthetic import SyntheticConfig, make_sample


class SampleSource(Protocol):
    """Samples by cursor position; position p and p + len(source) are the same epoch slot."""

    def __len__(self) -> int: ...

    def batch(self, cursor: int, size: int) -> list[Sample]:
        """The samples at positions `[cursor, cursor + size)`."""
        ...


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The seeded order of `n` items in `epoch`."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _positions(cursor: int, size: int) -> range:
    if cursor < 0 or size < 0:
        raise ValueError(f"cursor ({cursor}) and size ({size}) must be non-negative")
    return range(cursor, cursor + size)


class SyntheticSource:
    """`num` synthetic samples of `data_seed`, rendered when drawn, shuffled by `seed`."""

    def __init__(self, config: SyntheticConfig, num: int, data_seed: int, seed: int) -> None:
        if num < 1:
            raise ValueError(f"a synthetic source needs at least one sample, not {num}")
        self.config, self.num, self.data_seed, self.seed = config, num, data_seed, seed
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation)

    def __len__(self) -> int:
        return self.num

    def batch(self, cursor: int, size: int) -> list[Sample]:
        return [
            make_sample(self.config, self.data_seed, self.index_at(p))
            for p in _positions(cursor, size)
        ]

    def index_at(self, position: int) -> int:
        """Which sample position `position` draws."""
        epoch, offset = divmod(position, self.num)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_permutation(self.seed, epoch, self.num))
        return int(self._order[1][offset])


Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class _Recent(Generic[Key, Value]):
    """The `size` most recently used values by key; a missing one is made, the oldest dropped
    first (through `drop`)."""

    def __init__(self, size: int, drop: Callable[[Value], None] = lambda value: None) -> None:
        self.size, self.drop = size, drop
        self.values: OrderedDict[Key, Value] = OrderedDict()

    def get(self, key: Key, make: Callable[[Key], Value]) -> Value:
        if key in self.values:
            self.values.move_to_end(key)
            return self.values[key]
        while len(self.values) >= self.size:
            self.drop(self.values.popitem(last=False)[1])
        value = self.values[key] = make(key)
        return value


@dataclass(frozen=True)
class _Window:
    """Consecutive row groups of one epoch's order, whose rows are shuffled together."""

    groups: tuple[int, ...]  # indices into ShuffledParquet.groups
    starts: tuple[int, ...]  # first row of each group within the window
    rows: np.ndarray  # the window's row numbers in drawing order


class ShuffledParquet:
    """A parquet file or folder read in a seeded two-level shuffle per epoch (module doc)."""

    def __init__(self, path: str | Path, seed: int, window: int = 1) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 row group, not {window}")
        self.groups: list[RowGroup] = row_groups(path)
        if not self.groups:
            raise ValueError(f"dataset {path} holds no rows")
        self.seed, self.window = seed, window
        self._num = sum(g.num_rows for g in self.groups)
        self._epoch: tuple[int, np.ndarray, list[int]] | None = None  # epoch, order, starts
        self._current: tuple[int, int, _Window] | None = None  # epoch, window index, window
        # A window's row groups come from at most `window` files; their readers stay open so
        # that each footer is parsed once, not once per row group.
        self._decoded: _Recent[int, list[dict[str, Any]]] = _Recent(window)
        self._readers: _Recent[Path, pq.ParquetFile] = _Recent(window, pq.ParquetFile.close)
        self.reads = 0  # row groups read so far: each once per epoch

    def __len__(self) -> int:
        return self._num

    @property
    def decoded_groups(self) -> int:
        """Row groups held decoded now (at most `window`)."""
        return len(self._decoded.values)

    def batch(self, cursor: int, size: int) -> list[Sample]:
        return [self.sample_at(p) for p in _positions(cursor, size)]

    def sample_at(self, position: int) -> Sample:
        """The sample that `position` draws; a bad row raises `SampleError` naming it."""
        group_index, row = self.locate(position)
        group = self.groups[group_index]
        return row_to_sample(self._rows(group_index)[row], group.file, group.first_row + row)

    def locate(self, position: int) -> tuple[int, int]:
        """(row group index, row within it) that `position` draws: from (seed, position)."""
        epoch, offset = divmod(position, self._num)
        order, starts = self._epoch_order(epoch)
        index = bisect.bisect_right(starts, offset) - 1
        window = self._window(epoch, index, order)
        row = int(window.rows[offset - starts[index]])
        member = bisect.bisect_right(window.starts, row) - 1
        return window.groups[member], row - window.starts[member]

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, list[int]]:
        """The epoch's row group order and the first epoch offset of each window."""
        if self._epoch is None or self._epoch[0] != epoch:
            order = epoch_permutation(self.seed, epoch, len(self.groups))
            sizes = [
                sum(self.groups[g].num_rows for g in order[i : i + self.window])
                for i in range(0, len(order), self.window)
            ]
            self._epoch = (epoch, order, [0, *itertools.accumulate(sizes)][:-1])
        return self._epoch[1], self._epoch[2]

    def _window(self, epoch: int, index: int, order: np.ndarray) -> _Window:
        if self._current is None or self._current[:2] != (epoch, index):
            groups = tuple(int(g) for g in order[index * self.window : (index + 1) * self.window])
            sizes = [self.groups[g].num_rows for g in groups]
            # the trailing 1: numpy seeds [s, e] and [s, e, 0] alike (trailing zeros drop out)
            rng = np.random.default_rng([self.seed, epoch, index, 1])
            window = _Window(
                groups,
                tuple([0, *itertools.accumulate(sizes)][:-1]),
                rng.permutation(sum(sizes)),
            )
            self._current = (epoch, index, window)
        return self._current[2]

    def _rows(self, group_index: int) -> list[dict[str, Any]]:
        """The group's rows, read at most once while it stays among the `window` latest."""
        return self._decoded.get(group_index, self._read)

    def _read(self, group_index: int) -> list[dict[str, Any]]:
        group = self.groups[group_index]
        self.reads += 1
        return read_row_group(group, self._readers.get(group.file, open_parquet))


def spread_samples(path: str | Path, num: int) -> list[Sample]:
    """`num` rows evenly spaced over a parquet dataset (all of it if it has fewer), reading only
    the row groups that hold them: a bounded held-out split from a file of any length."""
    groups = row_groups(path)
    total = sum(g.num_rows for g in groups)
    wanted = sorted({i * total // num for i in range(num)}) if num < total else range(total)
    samples, start, taken = [], 0, 0
    for group in groups:
        end = start + group.num_rows
        rows_here = []
        while taken < len(wanted) and wanted[taken] < end:
            rows_here.append(wanted[taken] - start)
            taken += 1
        if rows_here:
            rows = read_row_group(group)
            samples += [row_to_sample(rows[r], group.file, group.first_row + r) for r in rows_here]
        start = end
    return samples
