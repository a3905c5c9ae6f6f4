"""Tests for `python -m jobs.make_data hf-parquet | jsonl`, run in-process: good rows reach
DIR/data.parquet (read back with `core.dataset.iter_samples`), bad rows are counted and named
in the summary and in DIR/bad_rows.jsonl, and a missing, unreadable or all-bad input exits 1
without a data.parquet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from benchmark_files import encoded_image

from core.dataset import iter_samples
from jobs import make_data

HF_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("bbox", pa.list_(pa.float64())),
    ]
)
JSON_FLAGS = ["--id-column", "key", "--image-column", "file", "--options-column", "choices"]
JSON_FLAGS += ["--box-format", "xywh", "--box-units", "normalized"]


def _record(key: str | None, file: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"key": key, "file": file, "question": "Where is the cup?"}
    record |= {"choices": ["(A) left", "(B) right"], "answer": "A", "bbox": None}
    return {k: v for k, v in (record | fields).items() if v is not None}


def _write_jsonl(root: Path, records: list[dict[str, Any]]) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "img" / "wide.png").write_bytes(encoded_image((200, 100), (10, 200, 10), "PNG"))
    (root / "img" / "tall.jpg").write_bytes(encoded_image((50, 120), (10, 10, 200), "JPEG"))
    (root / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    file = root / "questions.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return file


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of `python -m jobs.make_data ARGS`."""
    try:
        make_data.main(args)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_jsonl_writes_the_good_rows_and_reports_each_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        _record("q1", "img/wide.png", bbox=[0.25, 0.5, 0.5, 0.25]),  # -> (50, 50, 150, 75)
        _record("q2", "img/missing.jpg"),
        _record("q3", "img/corrupt.jpg"),
        _record("q4", "img/tall.jpg", bbox=[0.5, 0.5, 0.75, 0.25]),  # reaches x = 1.25 * 50
        _record("q5", "img/tall.jpg", question=None),
        _record(None, "img/tall.jpg", answer="right"),
    ]
    file = _write_jsonl(tmp_path / "src", records)
    out = tmp_path / "out"
    status, stdout, _ = _run(["jsonl", str(file), "--out", str(out), *JSON_FLAGS], capsys)

    assert status == 0
    samples = list(iter_samples(out / "data.parquet"))
    assert [(s.id, s.answer, s.gt_box, s.source) for s in samples] == [
        ("q1", "A", (50, 50, 150, 75), "questions"),
        ("questions_6", "B", None, "questions"),
    ]
    assert samples[1].decode_image().size == (50, 120)
    lines = stdout.splitlines()
    assert lines[0] == (
        f"wrote 2 rows to {out / 'data.parquet'}; 4 bad rows (6 read = 2 written + 4 bad), "
        f"all listed in {out / 'bad_rows.jsonl'}:"
    )
    assert lines[1] == "  q2: image file img/missing.jpg does not exist"
    assert lines[2].startswith("  q3: image file img/corrupt.jpg: cannot decode image")
    assert lines[3].startswith("  q4: box [0.5, 0.5, 0.75, 0.25] = (25, 60, 62.5, 90) px lies")
    assert lines[4] == "  q5: field 'question' is missing"
    bad = [json.loads(line) for line in (out / "bad_rows.jsonl").read_text().splitlines()]
    assert [(b["id"], b["location"]) for b in bad] == [
        (f"q{n}", f"{file} line {n}") for n in (2, 3, 4, 5)
    ]
    assert bad[0]["reason"] == "image file img/missing.jpg does not exist"


def test_hf_parquet_reads_shards_with_image_structs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = encoded_image((64, 48), (90, 90, 90), "JPEG")
    rows = [
        {"id": "a", "image": {"bytes": image, "path": "a.jpg"}, "question": "Which?",
         "options": ["A. yes", "B. no"], "answer": "no", "bbox": [8.0, 4.0, 40.0, 44.0]},
        {"id": None, "image": {"bytes": b"garbage", "path": "b.jpg"}, "question": "Which?",
         "options": ["A. yes", "B. no"], "answer": "A", "bbox": None},
    ]  # fmt: skip
    (tmp_path / "hub" / "data").mkdir(parents=True)
    shard = tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=HF_SCHEMA), shard)
    out = tmp_path / "out"
    args = ["hf-parquet", str(tmp_path / "hub"), "--out", str(out), "--source", "hub"]
    status, stdout, _ = _run(args, capsys)

    assert status == 0
    [sample] = iter_samples(out / "data.parquet")
    assert (sample.id, sample.image, sample.options, sample.answer) == (
        "a",
        image,
        ("yes", "no"),
        "B",
    )
    assert (sample.gt_box, sample.category, sample.source) == ((8, 4, 40, 44), "", "hub")
    assert "1 bad rows (2 read = 1 written + 1 bad)" in stdout
    assert f"  {shard} row 1: field 'image': cannot decode image" in stdout


def test_summary_names_the_first_bad_rows_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [_record("good", "img/wide.png")]
    records += [_record(f"gone{n}", f"img/gone{n}.png") for n in range(25)]
    file = _write_jsonl(tmp_path, records)
    status, stdout, _ = _run(
        ["jsonl", str(file), "--out", str(tmp_path / "out"), *JSON_FLAGS], capsys
    )
    assert status == 0
    shown = [line for line in stdout.splitlines() if line.startswith("  gone")]
    assert len(shown) == make_data.SHOWN_BAD_ROWS == 20
    assert stdout.splitlines()[-1] == "  ... and 5 more"
    assert len((tmp_path / "out" / "bad_rows.jsonl").read_text().splitlines()) == 25


def test_every_row_bad_exits_1_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = _write_jsonl(tmp_path, [_record("x", "img/none.png"), _record("y", "img/corrupt.jpg")])
    out = tmp_path / "out"
    status, _, stderr = _run(["jsonl", str(file), "--out", str(out), *JSON_FLAGS], capsys)
    assert status == 1
    assert f"error: all 2 rows of {file} are bad; no data.parquet written" in stderr
    assert "  x: image file img/none.png does not exist" in stderr
    assert not (out / "data.parquet").exists()
    assert len((out / "bad_rows.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("command", "name", "content", "message"),
    [
        ("jsonl", "missing.jsonl", None, "input file {file} does not exist"),
        ("hf-parquet", "missing.parquet", None, "input {file} does not exist"),
        ("jsonl", "empty.jsonl", "\n\n", "{file} holds no rows"),
        ("hf-parquet", "bad.parquet", "PAR1 not parquet", "{file}: cannot be read as parquet"),
    ],
)
def test_missing_or_unusable_input_exits_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    name: str,
    content: str | None,
    message: str,
) -> None:
    file = tmp_path / name
    if content is not None:
        file.write_text(content)
    out = tmp_path / "out"
    status, stdout, stderr = _run([command, str(file), "--out", str(out)], capsys)
    assert status == 1
    assert message.format(file=file) in stderr
    assert stdout == ""
    assert not (out / "data.parquet").exists()


def test_wrong_column_mapping_exits_1_naming_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=HF_SCHEMA), file)
    args = ["hf-parquet", str(file), "--out", str(tmp_path / "out"), "--answer-column", "label"]
    status, _, stderr = _run(args, capsys)
    assert status == 1
    assert f"error: {file} has no column 'label'" in stderr


def test_unknown_box_units_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["jsonl", str(tmp_path / "a.jsonl"), "--out", str(tmp_path), "--box-units", "inches"]
    status, _, stderr = _run(args, capsys)
    assert status == 2
    assert "invalid choice: 'inches'" in stderr
