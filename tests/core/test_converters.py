"""Tests for `core.converters`: HF parquet shards and JSON-lines files built here (PIL images,
parquet written with the `{bytes, path}` image struct as `datasets` writes it) are read back
field for field; every kind of bad row becomes a `BadRow` naming the row and the reason while
the good rows around it still come through; boxes in every convention land on the same pixels.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from benchmark_files import encoded_image
from hypothesis import given, settings
from hypothesis import strategies as st

from core.benchmarks import strip_option_letters
from core.converters import (
    BadRow,
    BoxConvention,
    ColumnMap,
    ConvertConfig,
    answer_letter,
    convert_hf_parquet,
    convert_jsonl,
    image_bytes,
    split_bad_rows,
    to_gt_box,
)
from core.sample import Sample, SampleError

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", HF_IMAGE),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("bbox", pa.list_(pa.float64())),
        ("category", pa.string()),
    ],
    # `datasets` records its features in the schema metadata; the converter ignores them.
    metadata={"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}})},
)
PNG_64x48 = encoded_image((64, 48), (200, 30, 30), "PNG")
JPEG_80x40 = encoded_image((80, 40), (30, 30, 200), "JPEG")


def _hf_row(row_id: str | None, image: bytes | None, **fields: Any) -> dict[str, Any]:
    """A row of HF_SCHEMA: a two-option question about `image`, overridden by `fields`."""
    row: dict[str, Any] = {"id": row_id, "image": {"bytes": image, "path": f"{row_id}.png"}}
    row |= {"question": "What colour is it?", "options": ["(A) red", "(B) blue"]}
    return row | {"answer": "A", "bbox": None, "category": "colour"} | fields


def _write_hf(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=HF_SCHEMA), path, row_group_size=2)
    return path


HF_ROWS = [
    _hf_row("p0", PNG_64x48, answer="B", bbox=[4.0, 6.0, 20.0, 30.0]),
    _hf_row("p1", JPEG_80x40, options=["cat", "dog", "bird"], answer="dog", category=None),
    _hf_row("p2", b"\x89PNG\r\n\x1a\n broken"),
    _hf_row("p3", PNG_64x48, bbox=[10.0, 10.0, 200.0, 30.0]),
    _hf_row("p4", PNG_64x48, question=None),
    _hf_row(None, None),
    _hf_row("p6", PNG_64x48, answer="E"),
    _hf_row("p7", PNG_64x48, bbox=[30.0, 10.0, 30.0, 20.0]),
]


def _split(rows: Any) -> tuple[list[Sample], list[BadRow]]:
    bad: list[BadRow] = []
    return list(split_bad_rows(rows, bad.append)), bad


def test_hf_parquet_reads_good_rows_and_names_every_bad_one(tmp_path: Path) -> None:
    file = _write_hf(tmp_path / "train.parquet", HF_ROWS)
    samples, bad = _split(convert_hf_parquet(file, ConvertConfig(source="mine")))

    assert samples == [
        Sample("p0", PNG_64x48, "What colour is it?", ("red", "blue"), "B", (4, 6, 20, 30),
               "colour", "mine"),
        Sample("p1", JPEG_80x40, "What colour is it?", ("cat", "dog", "bird"), "B", None, "",
               "mine"),
    ]  # fmt: skip
    assert len(samples) + len(bad) == len(HF_ROWS)
    reasons = {row.name: row.reason for row in bad}
    assert list(reasons) == ["p2", "p3", "p4", f"{file} row 5", "p6", "p7"]
    assert "cannot decode image" in reasons["p2"]
    assert "lies outside the 64x48 image" in reasons["p3"]
    assert reasons["p4"] == "field 'question' is missing"
    assert reasons[f"{file} row 5"] == "field 'image' holds no bytes (path 'None.png')"
    assert "neither a letter A, B nor an option's text" in reasons["p6"]
    assert "has no area" in reasons["p7"]
    assert all(row.location.startswith(f"{file} row ") for row in bad)


def test_hf_parquet_folder_reads_every_shard_in_path_order(tmp_path: Path) -> None:
    _write_hf(tmp_path / "data" / "train-00001-of-00002.parquet", [_hf_row("b", PNG_64x48)])
    _write_hf(tmp_path / "data" / "train-00000-of-00002.parquet", [_hf_row("a", PNG_64x48)])
    (tmp_path / "README.md").write_text("not parquet")
    samples, bad = _split(convert_hf_parquet(tmp_path, ConvertConfig()))
    assert [s.id for s in samples] == ["a", "b"] and bad == []


def test_hf_parquet_takes_raw_and_base64_images_and_mapped_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "picture": [PNG_64x48, None],
            "picture_b64": [None, base64.b64encode(JPEG_80x40).decode("ascii")],
            "prompt": ["Which?", "Which?"],
            "choices": [["A. left", "B. right"], ["left", "right"]],
            "label": ["(b)", "left"],
            "region": [[0.0, 0.0, 32.0, 24.0], None],
        }
    )
    pq.write_table(table.slice(0, 1).drop(["picture_b64"]), tmp_path / "a.parquet")
    renamed = (
        table.slice(1, 1)
        .drop(["picture"])
        .rename_columns(["picture", "prompt", "choices", "label", "region"])
    )
    pq.write_table(renamed, tmp_path / "b.parquet")
    columns = ColumnMap(
        image="picture", question="prompt", options="choices", answer="label", box="region"
    )
    samples, bad = _split(convert_hf_parquet(tmp_path, ConvertConfig(columns=columns)))
    assert bad == []
    assert [(s.id, s.image, s.answer, s.gt_box) for s in samples] == [
        ("a_0", PNG_64x48, "B", (0, 0, 32, 24)),
        ("b_0", JPEG_80x40, "A", None),
    ]


def test_hf_parquet_without_a_required_column_stops_naming_it(tmp_path: Path) -> None:
    file = _write_hf(tmp_path / "train.parquet", HF_ROWS[:1])
    config = ConvertConfig(columns=ColumnMap(question="prompt"))
    with pytest.raises(SampleError, match="has no column 'prompt'"):
        list(convert_hf_parquet(file, config))


def test_unreadable_parquet_stops_naming_the_file(tmp_path: Path) -> None:
    file = tmp_path / "broken.parquet"
    file.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SampleError, match="cannot be read as parquet"):
        list(convert_hf_parquet(file, ConvertConfig()))


def test_missing_inputs_raise_when_the_converter_is_called(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_hf_parquet(tmp_path / "nope.parquet", ConvertConfig())
    with pytest.raises(FileNotFoundError, match=r"holds no \.parquet files"):
        convert_hf_parquet(tmp_path, ConvertConfig())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_jsonl(tmp_path / "nope.jsonl", None, ConvertConfig())
    (tmp_path / "a.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="image root"):
        convert_jsonl(tmp_path / "a.jsonl", tmp_path / "no-images", ConvertConfig())


# --- JSON lines and JSON arrays ---------------------------------------------------------------

JSON_COLUMNS = ColumnMap(
    id="qid", image="img", question="q", options="choices", answer="label", box="box"
)
# xywh fractions of 64x32: x 8, y 8, w 32, h 16 -> (8, 8, 40, 24) px
GOOD_RECORD: dict[str, Any] = {
    "qid": "j1",
    "img": "imgs/a.png",
    "q": "Which side?",
    "choices": ["left", "right"],
    "label": "right",
    "box": [0.125, 0.25, 0.5, 0.5],
    "category": "position",
}
JSON_RECORDS: list[Any] = [  # a text is written as it is
    GOOD_RECORD,
    "",
    GOOD_RECORD | {"qid": "j3", "img": "imgs/missing.jpg"},
    "{not json",
    GOOD_RECORD | {"qid": "j5", "img": "imgs/text.png"},
    GOOD_RECORD | {"qid": "j6", "box": [0.5, 0.5, 0.6, 0.2]},
    {k: v for k, v in GOOD_RECORD.items() if k != "qid"} | {"label": "A"},
    GOOD_RECORD | {"qid": "j8", "label": None},
    GOOD_RECORD | {"qid": "j9", "box": [1, 2, 3]},
    ["a", "list"],
]
JSON_CONFIG = ConvertConfig(
    columns=JSON_COLUMNS, box=BoxConvention(format="xywh", units="normalized")
)


def _write_images(root: Path) -> None:
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "a.png").write_bytes(encoded_image((64, 32), (0, 120, 0), "PNG"))
    (root / "imgs" / "text.png").write_text("this is not an image")


def _write_jsonl(file: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def test_jsonl_reads_good_rows_and_names_every_bad_one(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    file = _write_jsonl(tmp_path / "train.jsonl", JSON_RECORDS)
    samples, bad = _split(convert_jsonl(file, tmp_path / "images", JSON_CONFIG))

    image = (tmp_path / "images" / "imgs" / "a.png").read_bytes()
    expected = Sample("j1", image, "Which side?", ("left", "right"), "B", (8, 8, 40, 24),
                      "position", "")  # fmt: skip
    assert samples == [expected, dataclasses.replace(expected, id="train_7", answer="A")]
    assert len(samples) + len(bad) == len(JSON_RECORDS) - 1  # the blank line is not a row
    reasons = {row.name: row.reason for row in bad}
    assert list(reasons) == ["j3", f"{file} line 4", "j5", "j6", "j8", "j9", f"{file} line 10"]
    assert reasons["j3"] == "image file imgs/missing.jpg does not exist"
    assert reasons[f"{file} line 4"].startswith("not valid JSON")
    assert reasons["j5"].startswith("image file imgs/text.png: cannot decode image")
    assert "lies outside the 64x32 image" in reasons["j6"]
    assert reasons["j8"] == "field 'label' is missing"
    assert "four numbers" in reasons["j9"]
    assert reasons[f"{file} line 10"] == "expected a JSON object, got list"
    assert [row.location for row in bad][:2] == [f"{file} line 3", f"{file} line 4"]


def test_json_array_file_is_read_like_json_lines(tmp_path: Path) -> None:
    _write_images(tmp_path)
    records = [GOOD_RECORD, GOOD_RECORD | {"qid": "j2", "img": "imgs/missing.jpg"}, 7]
    file = tmp_path / "train.json"
    file.write_text(json.dumps(records, indent=2), encoding="utf-8")
    samples, bad = _split(convert_jsonl(file, None, JSON_CONFIG))
    assert [s.id for s in samples] == ["j1"]
    assert [(b.name, b.location) for b in bad] == [
        ("j2", f"{file} element 1"),
        (f"{file} element 2", f"{file} element 2"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("{}", "must hold one JSON array"), ("[{}, {]", "element 1: not valid JSON"),
     ("[{} {}]", "expected ',' or ']'"), ("[] []", "text follows the array")],
)  # fmt: skip
def test_broken_json_array_stops_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "train.json"
    file.write_text(text)
    with pytest.raises(SampleError, match=message):
        list(convert_jsonl(file, None, JSON_CONFIG))


# --- fields -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size", "box_format", "units", "expected"),
    [
        ([4, 6, 20, 30], (64, 48), "xyxy", "pixels", (4, 6, 20, 30)),
        ([4, 6, 16, 24], (64, 48), "xywh", "pixels", (4, 6, 20, 30)),
        ([0.25, 0.5, 0.75, 1.0], (64, 48), "xyxy", "normalized", (16, 24, 48, 48)),
        ([0.25, 0.5, 0.5, 0.5], (64, 48), "xywh", "normalized", (16, 24, 48, 48)),
        ([250, 500, 750, 1000], (64, 48), "xyxy", "normalized1000", (16, 24, 48, 48)),
        ([-0.5, 0, 64.6, 48], (64, 48), "xyxy", "pixels", (0, 0, 64, 48)),  # clipped
        ([-20, 0, 2010, 100], (2000, 100), "xyxy", "pixels", (0, 0, 2000, 100)),  # 1% slack
        (None, (64, 48), "xyxy", "pixels", None),
    ],
)
def test_boxes_become_pixel_xyxy(
    value: Any, size: tuple[int, int], box_format: Any, units: Any, expected: Any
) -> None:
    assert to_gt_box(value, size, BoxConvention(format=box_format, units=units)) == expected


@pytest.mark.parametrize(
    ("value", "size", "box_format", "units", "message"),
    [
        ([4, 6, 20], (64, 48), "xyxy", "pixels", "four numbers"),
        ("4 6 20 30", (64, 48), "xyxy", "pixels", "four numbers"),
        ([4, 6, "20", 30], (64, 48), "xyxy", "pixels", "four numbers"),
        ([4, 6, True, 30], (64, 48), "xyxy", "pixels", "four numbers"),
        ([4, 6, float("nan"), 30], (64, 48), "xyxy", "pixels", "not finite"),
        ([20, 6, 4, 30], (64, 48), "xyxy", "pixels", "has no area"),
        ([4, 6, 0, 10], (64, 48), "xywh", "pixels", "has no area"),
        ([4, 6, 66, 30], (64, 48), "xyxy", "pixels", "outside the 64x48 image"),
        ([-2, 6, 20, 30], (64, 48), "xyxy", "pixels", "outside"),
        ([64.5, 6, 65, 30], (64, 48), "xyxy", "pixels", "outside"),  # in the slack, no area
        ([4, 6, 20, 30], (64, 48), "xyxy", "normalized", "outside"),  # pixels read as fractions
        ([0.5, 0.5, 0.6, 0.2], (64, 48), "xywh", "normalized", "outside"),
    ],
)
def test_bad_boxes_raise(
    value: Any, size: tuple[int, int], box_format: Any, units: Any, message: str
) -> None:
    with pytest.raises(SampleError, match=message):
        to_gt_box(value, size, BoxConvention(format=box_format, units=units))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_box_convention_reads_back_the_same_pixels(data: st.DataObject) -> None:
    width, height = data.draw(st.integers(2, 5000)), data.draw(st.integers(2, 5000))
    x1, y1 = data.draw(st.integers(0, width - 1)), data.draw(st.integers(0, height - 1))
    x2, y2 = data.draw(st.integers(x1 + 1, width)), data.draw(st.integers(y1 + 1, height))
    written = {
        ("xyxy", "pixels"): [x1, y1, x2, y2],
        ("xywh", "pixels"): [x1, y1, x2 - x1, y2 - y1],
        ("xyxy", "normalized"): [x1 / width, y1 / height, x2 / width, y2 / height],
        ("xywh", "normalized"): [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height],
        ("xyxy", "normalized1000"): [1000 * x1 / width, 1000 * y1 / height,
                                     1000 * x2 / width, 1000 * y2 / height],
    }  # fmt: skip
    for (box_format, units), value in written.items():
        convention = BoxConvention(format=box_format, units=units)
        box = to_gt_box(value, (width, height), convention)
        assert box == pytest.approx((x1, y1, x2, y2), abs=1e-6), (box_format, units)


@pytest.mark.parametrize(
    ("answer", "raw_options", "expected"),
    [
        ("B", ["(A) red", "(B) blue"], "B"),
        ("(b)", ["red", "blue"], "B"),
        ("blue", ["(A) red", "(B) blue"], "B"),
        ("(B) blue", ["(A) red", "(B) blue"], "B"),
        ("A", ["A", "B"], "A"),  # the letter and the text agree
    ],
)
def test_answer_is_a_letter_or_an_option_text(
    answer: str, raw_options: list[str], expected: str
) -> None:
    assert answer_letter(answer, raw_options, strip_option_letters(raw_options)) == expected


@pytest.mark.parametrize(
    ("answer", "options", "message"),
    [
        ("C", ["red", "blue"], "neither a letter A, B nor an option's text"),
        ("purple", ["red", "blue"], "neither"),
        ("Blue", ["red", "blue"], "neither"),  # texts match exactly
        ("A", ["B", "A"], "ambiguous: options A, B"),
        ("red", ["red", "red"], "ambiguous"),
    ],
)
def test_answer_naming_no_single_option_raises(
    answer: str, options: list[str], message: str
) -> None:
    with pytest.raises(SampleError, match=message):
        answer_letter(answer, options, options)


def test_image_bytes_accepts_every_stored_form() -> None:
    encoded = base64.b64encode(PNG_64x48).decode("ascii")
    assert image_bytes({"bytes": PNG_64x48, "path": "a.png"}, "image") == PNG_64x48
    assert image_bytes(PNG_64x48, "image") == PNG_64x48
    assert image_bytes(encoded, "image") == PNG_64x48
    assert image_bytes("data:image/png;base64," + encoded, "image") == PNG_64x48
    with pytest.raises(SampleError, match="'pic' holds no bytes"):
        image_bytes({"bytes": None, "path": "a.png"}, "pic")
    with pytest.raises(SampleError, match="'pic' is missing"):
        image_bytes(None, "pic")
    with pytest.raises(SampleError, match="should be image bytes, got int"):
        image_bytes(3, "pic")
