"""Golden strings for answer extraction and the accuracy reward."""

import pytest

from rewards.answer import AccuracyConfig, answer_text, extract_choice, match_answer, normalize

COLORS = ("blue", "red", "green", "yellow")
CARS = ("a blue car", "a red car", "a bus", "nothing")


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
    ],
)
def test_extract_choice(text: str, options: tuple[str, ...], letter: str | None) -> None:
    assert extract_choice(text, options) == letter


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


def test_answer_text_and_normalize() -> None:
    assert answer_text("<answer> x </answer>") == "x"
    assert answer_text("no tag") is None
    assert answer_text("no tag", require_tag=False) == "no tag"
    assert normalize("The  Red, car!") == "red car"
