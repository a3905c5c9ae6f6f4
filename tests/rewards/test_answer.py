"""Golden strings for answer extraction and the accuracy reward."""

import pytest

from rewards.answer import (
    AccuracyConfig,
    answer_text,
    extract_choice,
    letters_only,
    match_answer,
    normalize,
    prediction,
)

COLORS = ("blue", "red", "green", "yellow")
CARS = ("a blue car", "a red car", "a bus", "nothing")
SHADES = ("red", "dark red", "blue", "light blue")  # options that contain each other
VEHICLES = ("blue car", "red car", "bus", "white van")
LENIENT = AccuracyConfig(require_answer_tag=False)  # a reply without the tag is read whole
STRICT = AccuracyConfig(answer_match="strict")


@pytest.mark.parametrize(
    ("text", "options", "letter"),
    [
        ("B", COLORS, "B"),
        ("b", COLORS, "B"),
        ("(B)", COLORS, "B"),
        ("[b].", COLORS, "B"),
        ("B.", COLORS, "B"),
        ("B. red", COLORS, "B"),
        ("(B) red", COLORS, "B"),
        ("B) red", COLORS, "B"),
        ("B: red", COLORS, "B"),
        ("answer: b", COLORS, "B"),
        ("Answer: (C) green", COLORS, "C"),
        ("The answer is D.", COLORS, "D"),
        ("the answer is (a)", COLORS, "A"),
        ("Option C", COLORS, "C"),
        ("I think B", COLORS, "B"),
        ("red", COLORS, "B"),  # the text of exactly one option
        ("Red.", COLORS, "B"),
        ("A red car", CARS, "B"),  # option text wins over the leading article "A"
        ("the bus", CARS, "C"),
        ("E", COLORS, None),  # not an option
        ("answer: e", COLORS, None),
        ("B or C", COLORS, None),  # two letters: ambiguous
        ("", COLORS, None),
        ("purple", COLORS, None),
        ("it is probably red or blue", COLORS, None),
        ("dark red", SHADES, "B"),  # the longest of nested options
        ("It is the dark red one.", SHADES, "B"),
        ("It is red", SHADES, "A"),
        ("light blue", SHADES, "D"),
        ("red or blue", SHADES, None),  # two unrelated options
        ("dark red or light blue", SHADES, None),
    ],
)
def test_extract_choice(text: str, options: tuple[str, ...], letter: str | None) -> None:
    assert extract_choice(text, options) == letter


# Realistic replies over VEHICLES: the letter lenient mode reads (a reply without the tag read
# whole), and the one truth letter strict mode accepts (None: its letters are not one option).
REPLIES = [
    ("The answer is (B).", "B", None),
    ("The answer is B, the red car.", "B", None),
    ("The answer is B, not the blue car.", "B", None),  # an explicit letter beats option text
    ("The answer is a red car", "B", None),  # "a" is an article, not option A
    ("The answer is: a white van", "D", None),
    ("The answer is A because the car is blue.", "A", None),
    ("B. red car", "B", None),
    ("B) red car", "B", None),
    ("A. blue car", "A", None),
    ("red car", "B", None),
    ("It is a red car", "B", None),
    ("It is a white van", "D", None),
    ("<answer>It is a white van.</answer>", "D", None),
    ("A red car", "B", None),
    ("A bus.", "C", None),
    ("The bus", "C", None),
    ("I think it's the bus.", "C", None),  # "I" is a pronoun
    ("I would say C", "C", None),
    ("It's B.", "B", None),
    ("D\n\nIt is white.", "D", None),
    ("A", "A", "A"),
    ("b", "B", "B"),
    ("(b)", "B", "B"),
    ("[C]", "C", "C"),
    ("c.", "C", "C"),
    ("**B**", "B", "B"),
    ("Answer: B", "B", None),
    ("Answer: a", "A", None),
    ("Answer: C (bus)", "C", None),
    ("answer: (d)", "D", None),
    ("option d", "D", None),
    ("Option D: white van", "D", None),
    ("<answer>b</answer>", "B", "B"),
    ("<answer>(B)</answer>", "B", "B"),
    ("<answer>**B**</answer>", "B", "B"),
    ("<answer>B. red car</answer>", "B", None),
    ("<answer>The answer is B</answer>", "B", None),
    ("<answer>red car</answer>", "B", None),
    ("<answer>B2</answer>", None, "B"),  # strict keeps letters only
    ("<think>The car on the left is red.</think><answer>B</answer>", "B", "B"),
    ("<think>It could be the blue car.</think><answer>red car</answer>", "B", None),
    ("<think>x</think>\n<answer>\nC\n</answer>", "C", "C"),
    ("<answer>D</answer> The van is white.", "D", "D"),
    ("<answer>A</answer><answer>C</answer>", "C", "C"),  # the last tag
    ("The image shows a red car. So the answer is B.", "B", None),
    ("Looking closely, the vehicle is red. Answer: (b) red car", "B", None),
    ("The red car is parked next to the bus; the answer is C.", "C", None),
    ("None of the options", None, None),
    ("<answer>None of the options</answer>", None, None),
    ("<answer>E</answer>", None, None),  # not an option
    ("I", None, None),
    ("B or C", None, None),
    ("(B) or (C)", None, None),
    ("Either the red car or the bus.", None, None),
]


@pytest.mark.parametrize(("reply", "letter", "strict"), REPLIES)
def test_lenient_reads_realistic_replies(
    reply: str, letter: str | None, strict: str | None
) -> None:
    assert prediction(reply, VEHICLES, LENIENT) == letter
    for truth in "ABCD":
        assert (match_answer(reply, truth, VEHICLES, LENIENT).value == 1.0) == (truth == letter)


@pytest.mark.parametrize(("reply", "letter", "strict"), REPLIES)
def test_strict_reads_realistic_replies(reply: str, letter: str | None, strict: str | None) -> None:
    assert prediction(reply, VEHICLES, STRICT) == letters_only(answer_text(reply, False) or "")
    for truth in "ABCD":
        assert (match_answer(reply, truth, VEHICLES, STRICT).value == 1.0) == (truth == strict)


@pytest.mark.parametrize(
    ("reply", "truth", "options", "config", "value"),
    [
        ("<think>x</think><answer>B</answer>", "B", COLORS, AccuracyConfig(), 1.0),
        ("<think>x</think><answer>(b) red</answer>", "B", COLORS, AccuracyConfig(), 1.0),
        ("<think>x</think><answer>C</answer>", "B", COLORS, AccuracyConfig(), 0.0),
        ("<answer>A</answer><answer>B</answer>", "B", COLORS, AccuracyConfig(), 1.0),  # last
        ("B", "B", COLORS, AccuracyConfig(), 0.0),  # no tag
        ("B", "B", COLORS, AccuracyConfig(require_answer_tag=False), 1.0),
        ("<answer></answer>", "B", COLORS, AccuracyConfig(), 0.0),
        ("<answer>Stop sign!</answer>", "stop sign", (), AccuracyConfig(), 1.0),
        ("<answer>The  Stop-Sign</answer>", "stop sign", (), AccuracyConfig(), 1.0),
        ("<answer>a stop sign, red</answer>", "stop sign", (), AccuracyConfig(), 0.0),
        (
            "<answer>a stop sign, red</answer>",
            "stop sign",
            (),
            AccuracyConfig(free_form_match="contains"),
            1.0,
        ),
        ("<answer>bored</answer>", "red", (), AccuracyConfig(free_form_match="contains"), 0.0),
        ("B", "B", COLORS, STRICT, 1.0),  # strict reads a reply without the tag whole
        ("<answer>b</answer>", "B", COLORS, STRICT, 1.0),
        ("<answer>B. red</answer>", "B", COLORS, STRICT, 0.0),  # "Bred"
        ("<answer>red</answer>", "B", COLORS, STRICT, 0.0),
        ("<answer></answer>", "B", COLORS, STRICT, 0.0),
        ("<answer>Stop sign!</answer>", "stop sign", (), STRICT, 1.0),  # "Stopsign"
        ("<answer>The stop sign</answer>", "stop sign", (), STRICT, 0.0),  # lenient: 1
        ("<answer>7 cars</answer>", "7", (), STRICT, 0.0),  # "7" has no letters
    ],
)
def test_match_answer(
    reply: str, truth: str, options: tuple[str, ...], config: AccuracyConfig, value: float
) -> None:
    score = match_answer(reply, truth, options, config)
    assert score.value == value
    assert (score.reason is None) == (value == 1.0)


def test_reasons_name_the_problem() -> None:
    assert match_answer("B", "B", COLORS, AccuracyConfig()).reason == "no <answer> tag"
    assert match_answer("<answer> </answer>", "B", COLORS, AccuracyConfig()).reason == (
        "empty answer"
    )
    assert match_answer("<answer>C</answer>", "B", COLORS, AccuracyConfig()).reason == "chose C"
    assert match_answer("<answer>(C)</answer>", "B", COLORS, STRICT).reason == "letters 'C' differ"


def test_answer_text_and_normalize() -> None:
    assert answer_text("<answer> x </answer>") == "x"
    assert answer_text("no tag") is None
    assert answer_text("no tag", require_tag=False) == "no tag"
    assert normalize("The  Red, car!") == "red car"
    assert letters_only("(b) 2. red!") == "BRED"
