"""The data contract and its parquet storage: round trips, streaming, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.dataset import (
    RowGroup,
    count_samples,
    iter_samples,
    read_row_group,
    row_groups,
    write_samples,
)
from core.sample import SAMPLE_SCHEMA, Sample, SampleError, encode_png


def _png(width: int = 40, height: int = 30, colour: tuple[int, int, int] = (1, 2, 3)) -> bytes:
    return encode_png(Image.new("RGB", (width, height), colour))


def _samples(n: int) -> list[Sample]:
    return [
        Sample(
            id=f"s{i}",
            image=_png(40 + i, 30),
            question=f"question {i}?",
            options=("a", "b", "c", "d") if i % 2 else (),
            answer="B" if i % 2 else "free text",
            gt_box=(1.0, 2.0, 10.5, 20.0) if i % 3 else None,
            category="cat",
            source="test",
        )
        for i in range(n)
    ]


def test_round_trip_keeps_every_field_and_order(tmp_path: Path) -> None:
    samples = _samples(11)
    path = tmp_path / "d.parquet"
    assert write_samples(path, iter(samples), batch_size=4) == 11
    assert count_samples(path) == 11
    assert list(iter_samples(path, batch_size=3)) == samples
    assert pq.read_schema(path).equals(SAMPLE_SCHEMA)


def test_folder_of_files_is_read_in_name_order(tmp_path: Path) -> None:
    samples = _samples(6)
    write_samples(tmp_path / "b.parquet", samples[3:])
    write_samples(tmp_path / "a.parquet", samples[:3])
    assert [s.id for s in iter_samples(tmp_path)] == [s.id for s in samples]
    assert count_samples(tmp_path) == 6


def test_row_groups_come_from_metadata_and_read_one_at_a_time(tmp_path: Path) -> None:
    samples = _samples(7)
    write_samples(tmp_path / "a.parquet", samples[:5], batch_size=2)
    write_samples(tmp_path / "b.parquet", samples[5:], batch_size=2)
    groups = row_groups(tmp_path)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert groups == [
        RowGroup(a, 0, 0, 2),
        RowGroup(a, 1, 2, 2),
        RowGroup(a, 2, 4, 1),
        RowGroup(b, 0, 0, 2),
    ]
    assert [row["id"] for row in read_row_group(groups[1])] == ["s2", "s3"]


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    write_samples(path, _samples(5))
    reader = iter_samples(path, batch_size=1)
    assert next(reader).id == "s0"  # a generator: nothing read past what was asked


def test_bad_row_names_file_and_row(tmp_path: Path) -> None:
    rows = [s.to_row() for s in _samples(3)]
    rows[2]["gt_box"] = [5.0, 5.0, 1.0, 1.0]  # no area
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)
    reader = iter_samples(path)
    assert [next(reader).id, next(reader).id] == ["s0", "s1"]
    with pytest.raises(SampleError, match=r"bad\.parquet row 2: .*no area"):
        next(reader)


def test_missing_dataset_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        list(iter_samples(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": ""}, "empty id"),
        ({"image": b""}, "empty"),
        ({"gt_box": (1.0, 2.0, float("nan"), 4.0)}, "finite"),
        ({"gt_box": (3.0, 2.0, 3.0, 4.0)}, "no area"),
    ],
)
def test_invalid_samples_raise(change: dict, message: str) -> None:
    fields = _samples(1)[0].__dict__ | change
    with pytest.raises(SampleError, match=message):
        Sample(**fields)


def test_corrupt_image_names_the_sample() -> None:
    sample = Sample(id="broken", image=b"not an image", question="q", options=(), answer="a")
    with pytest.raises(SampleError, match=r"'broken'.*cannot decode"):
        sample.decode_image()
    truncated = _png(200, 200)[:60]
    with pytest.raises(SampleError, match="cannot decode"):
        Sample(id="t", image=truncated, question="q", options=(), answer="a").decode_image()


def test_decode_gives_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("L", (5, 5), 128).save(buffer, format="PNG")
    image = Sample(id="g", image=buffer.getvalue(), question="q", options=(), answer="a")
    assert image.decode_image().mode == "RGB"
