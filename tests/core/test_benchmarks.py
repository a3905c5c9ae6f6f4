"""Tests for `core.benchmarks`: V*, HR-Bench and MME-RealWorld-lite files built here in their
on-disk formats (PIL images of several sizes) are read back field for field, and every kind of
bad row raises `SampleError` naming the file and the row.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from benchmark_files import (
    INSTRUCTION,
    MMERWLLayout,
    encoded_image,
    hrbench_copies,
    mmerwl_schema,
    write_hrbench,
    write_mmerwl,
    write_vstar,
)

from core.benchmarks import (
    BENCHMARKS,
    hrbench_copy_key,
    hrbench_cycle,
    load_benchmark,
    load_hrbench,
    load_mmerwl,
    load_vstar,
    mmerwl_image,
    mmerwl_shards,
    normalize_answer_letter,
    split_vstar_text,
    strip_option_letters,
)
from core.sample import Sample, SampleError

MME_SHARD_SIZES = (2, 2, 1, 0)  # five rows over four shards, the last one empty
_encoded = encoded_image


@dataclass(frozen=True)
class Row:
    """One row as written in a benchmark's own format, with the `Sample` it must read back as."""

    record: dict[str, Any]  # every field but the image bytes (V*: the image path is a field)
    image: bytes
    size: tuple[int, int]
    expected: Sample


def _row(record: dict[str, Any], size: tuple[int, int], fmt: str, expected: Sample) -> Row:
    """A row whose image is generated here; `expected` gets the same image bytes."""
    image = _encoded(size, (10 * size[0] % 256, 40, 200), fmt)
    return Row(record, image, size, dataclasses.replace(expected, image=image))


# --- V* Bench ---------------------------------------------------------------------------------


class VStarCase(NamedTuple):
    question_id: int | str
    image: str  # relative path; ".png" files are PNG, others JPEG
    category: str
    size: tuple[int, int]
    question: str
    option_lines: str
    instructed: bool  # whether the answering instruction line follows the options
    label: str
    options: tuple[str, ...]  # expected
    answer: str  # expected


VSTAR_TABLE = [
    VStarCase(0, "direct_attributes/sa_1.jpg", "direct_attributes", (96, 64),
              "What is the color of the umbrella?", "(A) red\n(B) blue\n(C) green\n(D) yellow",
              True, "B", ("red", "blue", "green", "yellow"), "B"),
    VStarCase(1, "relative_position/sa_2.png", "relative_position", (40, 120),
              "Is the dog on the left or right side of the bench?", "(A) left\n(B) right",
              True, "A", ("left", "right"), "A"),
    VStarCase(2, "direct_attributes/sa_3.jpg", "direct_attributes", (200, 150),
              "What is the material of the glove?", "A. rubber\nB. cotton\nC. leather\nD. wool",
              True, "(D)", ("rubber", "cotton", "leather", "wool"), "D"),
    VStarCase("q7", "sa_4.png", "direct_attributes", (33, 17),
              "Is the clock showing A.M. or P.M.?", "(A) A.M.\n(B) P.M.",
              False, "b", ("A.M.", "P.M."), "B"),
]  # fmt: skip


def _vstar_rows() -> list[Row]:
    rows = []
    for case in VSTAR_TABLE:
        text = f"{case.question}\n{case.option_lines}"
        if case.instructed:
            text += f"\n{INSTRUCTION}"
        record: dict[str, Any] = {"image": case.image, "text": text, "label": case.label}
        record |= {"question_id": case.question_id, "category": case.category}
        expected = Sample(
            id=f"vstar_{case.question_id}",
            image=b"-",  # replaced by _row
            question=case.question,
            options=case.options,
            answer=case.answer,
            category=case.category,
            source="vstar",
        )
        fmt = "PNG" if case.image.endswith(".png") else "JPEG"
        rows.append(_row(record, case.size, fmt, expected))
    return rows


def _write_vstar(root: Path, rows: list[Row]) -> None:
    write_vstar(root, [(row.record, row.image) for row in rows])


# --- HR-Bench ---------------------------------------------------------------------------------

# question, options A-D, answer, category, image size (index = 100 + position)
HRBENCH_TABLE = [
    ("What is written on the red sign?", ("STOP", "EXIT", "OPEN", "SALE"), "C", "single",
     (120, 80)),
    ("How many boats are there?", ("1", "2", "3", "4"), "A", "single", (64, 64)),
    ("Which is closer to the tower,\nthe car or the bus?", ("car", "bus", "both", "neither"), "B",
     "cross", (30, 90)),
    ("What colour is the kite?", ("red", "green", "blue", "white"), "D", "single", (200, 100)),
    ("What time is on the clock?", ("1:00", "2:00", "3:00", "4:00"), "A", "cross", (77, 41)),
]  # fmt: skip


def _hrbench_rows(variant: str = "4k") -> list[Row]:
    rows = []
    for position, (question, options, answer, category, size) in enumerate(HRBENCH_TABLE):
        index = 100 + position
        record = {"index": index, "question": question, "answer": answer, "category": category}
        record |= {"cycle_category": f"{category}_{position % 2}"}
        record |= dict(zip("ABCD", options, strict=True))
        expected = Sample(
            id=f"hrbench_{variant}_{index}",
            image=b"-",
            question=question,
            options=options,
            answer=answer,
            category=category,
            source=f"hrbench_{variant}",
        )
        rows.append(_row(record, size, "JPEG", expected))
    return rows


def _write_hrbench(root: Path, rows: list[Row], variant: str = "4k") -> None:
    write_hrbench(root, [(row.record, row.image) for row in rows], variant)


# --- MME-RealWorld-lite -----------------------------------------------------------------------


# index, "multi-choice options", answer, category, image size -> expected options, answer
MMERWL_TABLE = [
    (1, ["(A) 12", "(B) 15", "(C) 18", "(D) 21", "(E) 24"], "(B)", "Perception/Monitoring",
     (150, 100), ("12", "15", "18", "21", "24"), "B"),
    (2, ["(A) left lane", "(B) right lane", "(C) shoulder", "(D) exit"], "A",
     "Reasoning/Autonomous_Driving", (48, 96), ("left lane", "right lane", "shoulder", "exit"),
     "A"),
    (3, ["A. 3.5%", "B. 4.0%", "C. 4.5%", "D. 5.0%"], "C", "Perception/Diagram and Table",
     (250, 60), ("3.5%", "4.0%", "4.5%", "5.0%"), "C"),
    (4, ["(A) airport", "(B) harbour", "(C) stadium", "(D) farm"], "(D)",
     "Perception/Remote Sensing", (64, 64), ("airport", "harbour", "stadium", "farm"), "D"),
    (5, ["(A) Main St", "(B) Oak Ave", "(C) Elm Rd", "(D) Pine Ln"], "A",
     "Perception/OCR with Complex Context", (90, 31), ("Main St", "Oak Ave", "Elm Rd", "Pine Ln"),
     "A"),
]  # fmt: skip


def _mmerwl_rows() -> list[Row]:
    rows = []
    for index, raw_options, raw_answer, category, size, options, answer in MMERWL_TABLE:
        question = f"Question number {index}?"
        record = {"index": index, "question_id": f"{category.lower()}/{index:04d}"}
        record |= {"question": question, "answer": raw_answer}
        record |= {"multi-choice options": raw_options, "category": category, "l2-category": "x"}
        expected = Sample(
            id=f"mmerwl_{record['question_id']}",
            image=b"-",
            question=question,
            options=options,
            answer=answer,
            category=category,
            source="mmerwl",
        )
        rows.append(_row(record, size, "JPEG" if index % 2 else "PNG", expected))
    return rows


MMERWL_IDS = ("index", "question_id")  # lmms-eval's shards hold both


def _write_mmerwl(
    root: Path,
    rows: list[Row],
    sizes: tuple[int, ...] = MME_SHARD_SIZES,
    id_columns: tuple[str, ...] = MMERWL_IDS,
    layout: MMERWLLayout = "bytes",
) -> None:
    """Contiguous chunks of `rows` into shards, images stored as `layout` stores them (default:
    lmms-eval's base64 text in a `bytes` column)."""
    chunks, start = [], 0
    for size in sizes:
        chunks.append([(row.record, row.image) for row in rows[start : start + size]])
        start += size
    assert start == len(rows)
    write_mmerwl(root, chunks, layout, id_columns)


def _mmerwl_where(position: int) -> tuple[str, str]:
    shard = 0
    while position >= MME_SHARD_SIZES[shard]:
        position -= MME_SHARD_SIZES[shard]
        shard += 1
    return f"train-{shard:05d}-of-00004.parquet", f"row {position}:"


# --- the three formats side by side -----------------------------------------------------------


@dataclass(frozen=True)
class Format:
    rows: Callable[[], list[Row]]
    write: Callable[[Path, list[Row]], None]
    load: Callable[[Path], Iterator[Sample]]
    where: Callable[[int], tuple[str, str]]  # position in rows -> (file name, row text)
    answer_field: str
    jsonl: bool = False


FORMATS = {
    "vstar": Format(
        _vstar_rows,
        _write_vstar,
        load_vstar,
        lambda i: ("test_questions.jsonl", f"line {i + 1}:"),
        "label",
        jsonl=True,
    ),
    "hrbench": Format(
        _hrbench_rows,
        _write_hrbench,
        lambda root: load_hrbench(root, "4k", batch_size=2),
        lambda i: ("hr_bench_4k.parquet", f"row {i}:"),
        "answer",
    ),
    "mmerwl": Format(
        _mmerwl_rows,
        _write_mmerwl,
        lambda root: load_mmerwl(root, batch_size=1),
        _mmerwl_where,
        "answer",
    ),
}


def _with_field(fmt: Format, row: Row, field: str, value: Any) -> Row:
    """`row` with `field` set to `value`; `None` means missing (jsonl: the key is left out)."""
    record = dict(row.record)
    if value is None and fmt.jsonl:
        record.pop(field, None)
    else:
        record[field] = value
    return dataclasses.replace(row, record=record)


def _load_until_error(fmt: Format, root: Path) -> tuple[list[Sample], str]:
    samples: list[Sample] = []
    with pytest.raises(SampleError) as excinfo:
        for sample in fmt.load(root):
            samples.append(sample)
    return samples, str(excinfo.value)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_round_trip_keeps_every_field_and_the_order(tmp_path: Path, name: str) -> None:
    fmt = FORMATS[name]
    rows = fmt.rows()
    fmt.write(tmp_path, rows)

    samples = list(fmt.load(tmp_path))

    assert samples == [row.expected for row in rows]
    assert [s.decode_image().size for s in samples] == [row.size for row in rows]
    assert all(s.gt_box is None and s.is_multiple_choice for s in samples)


@pytest.mark.parametrize("broken", [0, 3])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_corrupt_image_names_file_and_row(tmp_path: Path, name: str, broken: int) -> None:
    fmt = FORMATS[name]
    rows = fmt.rows()
    rows[broken] = dataclasses.replace(rows[broken], image=b"\xff\xd8 not really a jpeg")
    fmt.write(tmp_path, rows)

    samples, message = _load_until_error(fmt, tmp_path)

    file_name, row_text = fmt.where(broken)
    assert file_name in message and row_text in message
    assert "cannot decode image" in message
    assert samples == [row.expected for row in rows[:broken]]  # streamed up to the bad row


MISSING_FIELDS = [
    ("vstar", "text"),
    ("vstar", "label"),
    ("vstar", "question_id"),
    ("vstar", "category"),
    ("vstar", "image"),
    ("hrbench", "index"),
    ("hrbench", "question"),
    ("hrbench", "C"),
    ("hrbench", "answer"),
    ("hrbench", "category"),
    ("hrbench", "image"),
    ("mmerwl", "question_id"),
    ("mmerwl", "question"),
    ("mmerwl", "multi-choice options"),
    ("mmerwl", "answer"),
    ("mmerwl", "category"),
    ("mmerwl", "bytes"),
]


@pytest.mark.parametrize(("name", "field"), MISSING_FIELDS)
def test_missing_field_names_file_row_and_field(tmp_path: Path, name: str, field: str) -> None:
    fmt = FORMATS[name]
    rows = fmt.rows()
    rows[2] = _with_field(fmt, rows[2], field, None)
    fmt.write(tmp_path, rows)

    samples, message = _load_until_error(fmt, tmp_path)

    file_name, row_text = fmt.where(2)
    assert file_name in message and row_text in message
    assert f"field {field!r} is missing" in message
    assert len(samples) == 2


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_answer_letter_outside_the_options_is_an_error(tmp_path: Path, name: str) -> None:
    fmt = FORMATS[name]
    rows = fmt.rows()
    rows[1] = _with_field(fmt, rows[1], fmt.answer_field, "F")
    fmt.write(tmp_path, rows)

    _, message = _load_until_error(fmt, tmp_path)

    file_name, row_text = fmt.where(1)
    assert file_name in message and row_text in message
    assert "answer 'F' is not one of the option letters" in message


UNPARSEABLE = [
    ("vstar", "text", "What colour is the car? red, blue or green", "no option lines"),
    ("vstar", "text", "Which one?\n(A) red\n(C) blue", "expected 'B'"),
    ("vstar", "question_id", [1, 2], "not a usable id"),
    ("hrbench", "answer", "the second one", "is not an option letter"),
    ("hrbench", "image", "abc", "not valid base64"),
    ("mmerwl", "multi-choice options", ["(A) yes", "(C) no"], "expected 'B'"),
    ("mmerwl", "multi-choice options", [], "there are no options"),
    ("mmerwl", "answer", "A or B", "is not an option letter"),
    ("mmerwl", "bytes", "abc", "field 'bytes' is not valid base64"),
]


@pytest.mark.parametrize(("name", "field", "value", "complaint"), UNPARSEABLE)
def test_unparseable_value_names_file_row_and_problem(
    tmp_path: Path, name: str, field: str, value: Any, complaint: str
) -> None:
    fmt = FORMATS[name]
    rows = fmt.rows()
    rows[3] = _with_field(fmt, rows[3], field, value)
    fmt.write(tmp_path, rows)

    samples, message = _load_until_error(fmt, tmp_path)

    file_name, row_text = fmt.where(3)
    assert file_name in message and row_text in message
    assert complaint in message
    assert len(samples) == 3


# --- V* details -------------------------------------------------------------------------------

SPLITS = [
    (
        f"What is the color of the cup?\n(A) red\n(B) blue\n{INSTRUCTION}",
        "What is the color of the cup?",
        ("red", "blue"),
    ),
    (
        "Which?\nA. red car\nB. blue car\nC. green car",
        "Which?",
        ("red car", "blue car", "green car"),
    ),
    ("Which?\nA) one\nB) two\n", "Which?", ("one", "two")),
    ("Which?\n(A)one\n(B)  two  ", "Which?", ("one", "two")),
    (
        "First line.\n\nSecond line?\n\n(A) x\n(B) y\n\nAnswer briefly.\nThanks.",
        "First line.\nSecond line?",
        ("x", "y"),
    ),
    ("Is it A.M. or P.M.?\n(A) A.M.\n(B) P.M.", "Is it A.M. or P.M.?", ("A.M.", "P.M.")),
]


@pytest.mark.parametrize(("text", "question", "options"), SPLITS)
def test_split_vstar_text(text: str, question: str, options: tuple[str, ...]) -> None:
    assert split_vstar_text(text) == (question, options)


BAD_TEXTS = [
    ("Which colour is it?", "no option lines"),
    ("(A) red\n(B) blue", "no question"),
    ("Which?\n(A) red\n(C) blue", "expected 'B'"),
    ("Which?\n(B) red\n(C) blue", "expected 'A'"),
    ("Which?\n(A)\n(B) blue", "has no text"),
    ("Which?\n(A) red\nor maybe\n(B) blue", "separated from the other options"),
]


@pytest.mark.parametrize(("text", "complaint"), BAD_TEXTS)
def test_split_vstar_text_rejects_malformed_text(text: str, complaint: str) -> None:
    with pytest.raises(SampleError, match=complaint):
        split_vstar_text(text)


def test_vstar_bad_json_and_blank_lines_report_the_physical_line(tmp_path: Path) -> None:
    rows = _vstar_rows()
    _write_vstar(tmp_path, rows)
    file = tmp_path / "test_questions.jsonl"
    first, second, *_ = file.read_text(encoding="utf-8").splitlines()
    file.write_text(f"{first}\n\n{second}\n{{not json\n", encoding="utf-8")

    samples: list[Sample] = []
    with pytest.raises(SampleError, match=r"test_questions\.jsonl line 4: not valid JSON"):
        for sample in load_vstar(tmp_path):
            samples.append(sample)

    assert samples == [rows[0].expected, rows[1].expected]


def test_vstar_missing_image_file_names_line_and_image(tmp_path: Path) -> None:
    _write_vstar(tmp_path, _vstar_rows())
    (tmp_path / "relative_position" / "sa_2.png").unlink()

    with pytest.raises(SampleError) as excinfo:
        list(load_vstar(tmp_path))

    message = str(excinfo.value)
    assert "test_questions.jsonl line 2:" in message and "sa_2.png" in message


# --- HR-Bench details -------------------------------------------------------------------------


def test_hrbench_8k_reads_its_own_file(tmp_path: Path) -> None:
    rows = _hrbench_rows("8k")
    _write_hrbench(tmp_path, rows, variant="8k")

    samples = list(load_hrbench(tmp_path, "8k"))

    assert samples == [row.expected for row in rows]
    assert samples[0].id == "hrbench_8k_100" and samples[0].source == "hrbench_8k"


def test_hrbench_missing_column_is_an_error_at_row_0(tmp_path: Path) -> None:
    rows = _hrbench_rows()
    _write_hrbench(tmp_path, rows)
    file = tmp_path / "hr_bench_4k.parquet"
    pq.write_table(pq.read_table(file).drop_columns(["category"]), file)

    with pytest.raises(
        SampleError, match=r"hr_bench_4k\.parquet row 0: field 'category' is missing"
    ):
        next(load_hrbench(tmp_path, "4k"))


def test_hrbench_file_that_is_not_parquet_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "hr_bench_4k.parquet").write_bytes(b"this is not parquet")

    with pytest.raises(SampleError, match=r"hr_bench_4k\.parquet: cannot be read as parquet"):
        list(load_hrbench(tmp_path, "4k"))


def test_hrbench_copies_of_a_question_share_a_key_and_name_their_cycle() -> None:
    image = _encoded((60, 40), (10, 20, 30), "JPEG")
    options = ("red", "green", "blue", "white")
    copies = [r for r, _ in hrbench_copies(7, "What colour?", options, "C", image, "single")]
    stored = [{**r, "image": base64.b64encode(image).decode("ascii")} for r in copies]
    other_image = {**stored[0], "image": base64.b64encode(_PNG).decode("ascii")}
    other_question = {**stored[0], "question": "Which colour?"}
    other_options = {**stored[0], "D": "black"}

    keys = {hrbench_copy_key(row) for row in stored}

    assert len(keys) == 1
    assert [r["answer"] for r in copies] == ["C", "D", "A", "B"]
    assert [r[r["answer"]] for r in copies] == ["blue"] * 4  # the answer follows its option
    assert all(hrbench_copy_key(row) not in keys for row in (other_image, other_question))
    assert hrbench_copy_key(other_options) not in keys
    assert [hrbench_cycle(row) for row in stored] == ["cycle_1", "cycle_2", "cycle_3", "cycle_4"]
    assert hrbench_cycle({"cycle_category": " "}) is None and hrbench_cycle({}) is None


def test_hrbench_copy_key_reads_what_an_unreadable_row_holds() -> None:
    row = {"question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d", "image": "not base64!"}

    assert hrbench_copy_key(row) == hrbench_copy_key(dict(row))
    assert hrbench_copy_key({**row, "A": "b", "B": "a"}) == hrbench_copy_key(row)
    assert hrbench_copy_key({**row, "question": None}) != hrbench_copy_key(row)


# --- MME-RealWorld-lite details ---------------------------------------------------------------

OPTION_LISTS = [
    (["(A) red", "(B) blue"], ("red", "blue")),
    (["A. red", "B. blue", "C. green"], ("red", "blue", "green")),
    (["(A)  two words ", "(B) 4.5%"], ("two words", "4.5%")),
    (["(A) (1, 2)", "(B) (3, 4)"], ("(1, 2)", "(3, 4)")),
    (["red", "blue"], ("red", "blue")),  # no prefixes: kept as they are
]


@pytest.mark.parametrize(("options", "texts"), OPTION_LISTS)
def test_strip_option_letters(options: list[str], texts: tuple[str, ...]) -> None:
    assert strip_option_letters(options) == texts


@pytest.mark.parametrize(
    ("options", "complaint"),
    [([], "no options"), (["(B) red", "(A) blue"], "expected 'A'"), (["(A) ", "(B) x"], "no text")],
)
def test_strip_option_letters_rejects_bad_lists(options: list[str], complaint: str) -> None:
    with pytest.raises(SampleError, match=complaint):
        strip_option_letters(options)


@pytest.mark.parametrize(
    ("answer", "letter"), [("A", "A"), ("(B)", "B"), (" (c) ", "C"), ("D.", "D"), ("e", "E")]
)
def test_normalize_answer_letter(answer: str, letter: str) -> None:
    assert normalize_answer_letter(answer, n_options=5) == letter


@pytest.mark.parametrize("answer", ["", "AB", "(A", "7", "F", "answer: A"])
def test_normalize_answer_letter_rejects(answer: str) -> None:
    with pytest.raises(SampleError, match="answer"):
        normalize_answer_letter(answer, n_options=5)


@pytest.mark.parametrize(
    ("id_columns", "id_field"), [(MMERWL_IDS, "question_id"), (("index",), "index")]
)
def test_mmerwl_prefers_question_id_over_index(
    tmp_path: Path, id_columns: tuple[str, ...], id_field: str
) -> None:
    rows = _mmerwl_rows()
    _write_mmerwl(tmp_path, rows, id_columns=id_columns)

    ids = [sample.id for sample in load_mmerwl(tmp_path)]

    assert ids == [f"mmerwl_{row.record[id_field]}" for row in rows]


def test_mmerwl_without_id_columns_uses_shard_and_row(tmp_path: Path) -> None:
    _write_mmerwl(tmp_path, _mmerwl_rows(), id_columns=())

    ids = [sample.id for sample in load_mmerwl(tmp_path)]

    assert ids == [
        "mmerwl_train-00000-of-00004_0",
        "mmerwl_train-00000-of-00004_1",
        "mmerwl_train-00001-of-00004_0",
        "mmerwl_train-00001-of-00004_1",
        "mmerwl_train-00002-of-00004_0",
    ]


@pytest.mark.parametrize("layout", ["image_struct", "image_binary", "image_base64"])
def test_mmerwl_older_image_layouts_read_the_same(tmp_path: Path, layout: MMERWLLayout) -> None:
    rows = _mmerwl_rows()
    _write_mmerwl(tmp_path, rows, layout=layout)

    assert list(load_mmerwl(tmp_path)) == [row.expected for row in rows]


def test_mmerwl_image_struct_without_bytes_is_an_error(tmp_path: Path) -> None:
    rows = _mmerwl_rows()
    _write_mmerwl(tmp_path, rows, layout="image_struct")
    shard = tmp_path / "data" / "train-00000-of-00004.parquet"
    table = pq.read_table(shard).to_pylist()
    table[1]["image"] = {"bytes": None, "path": "elsewhere.jpg"}
    schema = mmerwl_schema("image_struct", MMERWL_IDS)
    pq.write_table(pa.Table.from_pylist(table, schema=schema), shard)

    with pytest.raises(SampleError, match=r"train-00000-of-00004\.parquet row 1: .*no bytes"):
        list(load_mmerwl(tmp_path))


_PNG = encoded_image((20, 10), (0, 90, 200), "PNG")
_B64 = base64.b64encode(_PNG).decode("ascii")


@pytest.mark.parametrize(
    "row",
    [
        {"bytes": _B64},
        {"bytes": _PNG},
        {"bytes": _B64, "image": b"ignored: bytes comes first"},
        {"bytes": None, "image": {"bytes": _PNG, "path": "x.png"}},
        {"image": _PNG},
        {"image": _B64},
    ],
)
def test_mmerwl_image_reads_bytes_then_image(row: dict[str, Any]) -> None:
    assert mmerwl_image(row) == _PNG


@pytest.mark.parametrize(
    ("row", "complaint"),
    [
        ({}, "field 'bytes' is missing (and there is no 'image' field)"),
        ({"bytes": None}, "field 'bytes' is missing"),
        ({"image": None}, "field 'image' is missing"),
        ({"bytes": "abc"}, "field 'bytes' is not valid base64"),
        ({"bytes": base64.b64encode(b"not an image").decode()}, "field 'bytes': cannot decode"),
        ({"bytes": 7}, "field 'bytes' should be bytes or base64 text, got int"),
    ],
)
def test_mmerwl_image_errors_name_the_field(row: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SampleError) as excinfo:
        mmerwl_image(row)
    assert complaint in str(excinfo.value)


def test_mmerwl_missing_shard_is_named(tmp_path: Path) -> None:
    _write_mmerwl(tmp_path, _mmerwl_rows())
    missing = tmp_path / "data" / "train-00002-of-00004.parquet"
    missing.unlink()

    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_mmerwl(tmp_path)


def test_mmerwl_shards_must_agree_on_their_count(tmp_path: Path) -> None:
    _write_mmerwl(tmp_path, _mmerwl_rows())
    _write_mmerwl(tmp_path, _mmerwl_rows()[:2], sizes=(1, 1))

    with pytest.raises(ValueError, match="disagree on their count"):
        mmerwl_shards(tmp_path)


# --- entry point ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("vstar", "test_questions.jsonl"),
        ("hrbench_4k", "hr_bench_4k.parquet"),
        ("hrbench_8k", "hr_bench_8k.parquet"),
        ("mmerwl", "data"),
    ],
)
def test_missing_benchmark_file_raises_at_call(tmp_path: Path, name: str, missing: str) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / missing))):
        load_benchmark(name, tmp_path)  # type: ignore[arg-type]


def test_load_benchmark_dispatches_by_name(tmp_path: Path) -> None:
    _write_vstar(tmp_path, _vstar_rows())
    _write_hrbench(tmp_path, _hrbench_rows("4k"), variant="4k")
    _write_hrbench(tmp_path, _hrbench_rows("8k"), variant="8k")
    _write_mmerwl(tmp_path, _mmerwl_rows())
    expected = {
        "vstar": _vstar_rows(),
        "hrbench_4k": _hrbench_rows("4k"),
        "hrbench_8k": _hrbench_rows("8k"),
        "mmerwl": _mmerwl_rows(),
    }

    for name in BENCHMARKS:
        samples = list(load_benchmark(name, tmp_path))  # type: ignore[arg-type]
        assert samples == [row.expected for row in expected[name]]
        assert {sample.source for sample in samples} == {name}


def test_load_benchmark_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark 'mmbench'"):
        load_benchmark("mmbench", tmp_path)  # type: ignore[arg-type]
