"""Training data by cursor: a seeded permutation per epoch, exact resume, bounded memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import core.stream
from core.dataset import RowGroup, row_groups, write_samples
from core.sample import SAMPLE_SCHEMA, Sample, SampleError, encode_png
from core.stream import SampleSource, ShuffledParquet, SyntheticSource, spread_samples
from core.synthetic import SyntheticConfig

SMALL = SyntheticConfig(
    width=256,
    height=256,
    min_long_side=0,
    landmarks=1,
    landmark_min_size=16,
    landmark_max_size=32,
    target_size=6,
    glyph_gap=2,
    distractors=0,
    clutter=0,
    texture_lines=0,
)
PNG = encode_png(Image.new("RGB", (8, 6), (1, 2, 3)))
SourceFactory = Callable[[int], SampleSource]  # shuffle seed -> source


def _samples(start: int, n: int) -> list[Sample]:
    return [
        Sample(id=f"s{i}", image=PNG, question="q?", options=(), answer="a")
        for i in range(start, start + n)
    ]


def _dataset(folder: Path) -> Path:
    """18 rows in two files: row groups of 4, 4, 3 and of 3, 3, 1."""
    write_samples(folder / "a.parquet", _samples(0, 11), batch_size=4)
    write_samples(folder / "b.parquet", _samples(11, 7), batch_size=3)
    return folder


@pytest.fixture(params=["parquet-1", "parquet-2", "parquet-4", "synthetic"])
def make_source(request: pytest.FixtureRequest, tmp_path: Path) -> SourceFactory:
    """A factory of sources over the same data, by shuffle seed."""
    kind = request.param
    if kind == "synthetic":
        return lambda seed: SyntheticSource(SMALL, 18, data_seed=3, seed=seed)
    folder = _dataset(tmp_path)
    window = int(kind.split("-")[1])
    return lambda seed: ShuffledParquet(folder, seed, window=window)


def _ids(source: SampleSource, cursor: int, size: int) -> list[str]:
    return [s.id for s in source.batch(cursor, size)]


def test_every_epoch_draws_each_sample_once(make_source: SourceFactory) -> None:
    source = make_source(0)
    assert len(source) == 18
    drawn: list[str] = []
    cursor = 0
    while cursor < 3 * 18:  # batches of 5 straddle the epoch boundaries
        drawn += _ids(source, cursor, 5)
        cursor += 5
    epochs = [drawn[0:18], drawn[18:36], drawn[36:54]]
    everything = sorted(epochs[0])
    assert len(set(everything)) == 18
    assert all(sorted(epoch) == everything for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch its own order


def test_the_seed_alone_decides_the_order(make_source: SourceFactory) -> None:
    assert _ids(make_source(7), 0, 36) == _ids(make_source(7), 0, 36)
    assert _ids(make_source(7), 0, 18) != _ids(make_source(8), 0, 18)


@pytest.mark.parametrize("resume_at", [0, 3, 17, 18, 20, 35])
def test_resuming_at_a_cursor_draws_what_the_run_would_have(
    make_source: SourceFactory, resume_at: int
) -> None:
    uninterrupted = make_source(1)
    run = [_ids(uninterrupted, c, 4) for c in range(0, 48, 4)]
    flat = [sample for batch in run for sample in batch]
    resumed = make_source(1)  # a fresh process: nothing carried over but the cursor
    tail = [sample for c in range(resume_at, 48, 4) for sample in _ids(resumed, c, 4)]
    assert tail[: 48 - resume_at] == flat[resume_at:]


def test_synthetic_positions_name_samples_of_the_data_seed() -> None:
    source = SyntheticSource(SMALL, 6, data_seed=3, seed=0)
    ids = _ids(source, 0, 6)
    assert sorted(ids) == sorted(f"synthetic-3-{i}" for i in range(6))


@pytest.mark.parametrize("window", [1, 2, 3])
def test_an_epoch_reads_each_row_group_once_and_holds_at_most_a_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    folder = _dataset(tmp_path)
    source = ShuffledParquet(folder, seed=2, window=window)
    held_at_read: list[int] = []
    read = core.stream.read_row_group

    def counting_read(group: RowGroup, reader: pq.ParquetFile | None = None) -> list[dict]:
        held_at_read.append(source.decoded_groups)
        return read(group, reader)

    monkeypatch.setattr(core.stream, "read_row_group", counting_read)
    for cursor in range(0, 18, 3):
        source.batch(cursor, 3)
        assert source.decoded_groups <= window
    assert len(held_at_read) == source.reads == len(row_groups(folder)) == 6
    assert max(held_at_read) < window  # one is dropped before the next is read


def test_a_file_is_opened_once_while_its_row_groups_are_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_samples(tmp_path / "one.parquet", _samples(0, 40), batch_size=4)
    opened: list[Path] = []
    open_parquet = core.stream.open_parquet

    def counting_open(file: Path) -> pq.ParquetFile:
        opened.append(file)
        return open_parquet(file)

    monkeypatch.setattr(core.stream, "open_parquet", counting_open)
    source = ShuffledParquet(tmp_path / "one.parquet", seed=0, window=2)
    source.batch(0, 80)
    assert source.reads >= 18 and opened == [tmp_path / "one.parquet"]  # one footer parse


def test_a_window_of_one_draws_a_row_group_at_a_time(tmp_path: Path) -> None:
    source = ShuffledParquet(_dataset(tmp_path), seed=5, window=1)
    groups = [source.locate(p)[0] for p in range(18)]
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert sorted(runs) == list(range(6))  # each group's rows come together, once an epoch


def test_a_bad_row_names_its_file_and_row(tmp_path: Path) -> None:
    rows = [s.to_row() for s in _samples(0, 8)]
    rows[5]["gt_box"] = [5.0, 5.0, 1.0, 1.0]  # no area
    pq.write_table(
        pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), tmp_path / "bad.parquet", row_group_size=4
    )
    source = ShuffledParquet(tmp_path / "bad.parquet", seed=0)
    with pytest.raises(SampleError, match=r"bad\.parquet row 5: .*no area"):
        source.batch(0, 8)


def test_an_empty_dataset_or_a_negative_cursor_is_refused(tmp_path: Path) -> None:
    write_samples(tmp_path / "empty.parquet", [])
    with pytest.raises(ValueError, match="no rows"):
        ShuffledParquet(tmp_path / "empty.parquet", seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        SyntheticSource(SMALL, 3, data_seed=0, seed=0).batch(-1, 2)


@pytest.mark.parametrize(
    ("num", "expected"),
    [(0, []), (4, ["s0", "s4", "s9", "s13"]), (18, [f"s{i}" for i in range(18)]), (50, None)],
)
def test_held_out_rows_are_evenly_spaced(tmp_path: Path, num: int, expected: list | None) -> None:
    samples = spread_samples(_dataset(tmp_path), num)
    everything = [f"s{i}" for i in range(18)]
    assert [s.id for s in samples] == (everything if expected is None else expected)
