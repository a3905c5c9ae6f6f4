"""Golden strings for the format reward: both turns, tricky shapes included."""

import pytest

from rewards.format import check_stage1, check_stage2, format_score

GOOD_1 = "<think>the sign is top left</think><zoom>[10, 20, 110, 220]</zoom>"
GOOD_2 = "<think>it reads STOP</think><answer>B</answer>"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD_1, None),
        ("  <think>x</think>\n<zoom>[0,0,5,5]</zoom>\n", None),
        ("<think>x</think><zoom>[1.5, 2.25, 30., .5]</zoom>", None),
        ("<think>x</think><zoom>[-3, 0, 5, 5]</zoom>", None),  # well formed; geometry clamps
        ("<think>x</think><zoom>[ 1 , 2 , 3 , 4 ]</zoom>", None),
        ("<zoom>[0, 0, 5, 5]</zoom>", "0 <think>"),
        ("<think>x</think>", "0 <zoom>"),
        ("<think>x</think><zoom>[0, 0, 5]</zoom>", "is not [x1, y1, x2, y2]"),
        ("<think>x</think><zoom>[0, 0, 5, 5, 6]</zoom>", "is not [x1, y1, x2, y2]"),
        ("<think>x</think><zoom>0, 0, 5, 5</zoom>", "is not [x1, y1, x2, y2]"),
        ("<think>x</think><zoom>[a, 0, 5, 5]</zoom>", "is not [x1, y1, x2, y2]"),
        ("<think>x</think><zoom>[nan, 0, 5, 5]</zoom>", "is not [x1, y1, x2, y2]"),
        ("<think>x</think><zoom>[]</zoom>", "is not [x1, y1, x2, y2]"),
        ("<think>x</think><zoom>[0,0,5,5]</zoom><zoom>[1,1,2,2]</zoom>", "2 <zoom>"),
        ("<think>x</think><zoom>[0,0,5,5]", "0 </zoom>"),
        ("<think>x<think>y</think><zoom>[0,0,5,5]</zoom>", "2 <think>"),
        ("<think>x</think>see <zoom>[0,0,5,5]</zoom>", "text outside"),
        ("<think>x</think><zoom>[0,0,5,5]</zoom> done", "text outside"),
        ("hello <think>x</think><zoom>[0,0,5,5]</zoom>", "text outside"),
        ("<zoom>[0,0,5,5]</zoom><think>x</think>", "text outside"),
        ("", "0 <think>"),
    ],
)
def test_stage1_format(text: str, problem: str | None) -> None:
    got = check_stage1(text)
    assert got == problem if problem is None else problem in (got or "")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD_2, None),
        ("<think>long\nreasoning</think>\n<answer>a red car</answer>\n", None),
        ("<think>x</think><answer>  </answer>", "empty <answer>"),
        ("<think>x</think>", "0 <answer>"),
        ("<answer>B</answer>", "0 <think>"),
        ("<think>x</think><answer>B</answer><answer>C</answer>", "2 <answer>"),
        ("<think>x</think><answer>B", "0 </answer>"),
        ("<think>x</think>B", "0 <answer>"),
        ("<think>x</think><answer>B</answer> because", "text outside"),
    ],
)
def test_stage2_format(text: str, problem: str | None) -> None:
    got = check_stage2(text)
    assert got == problem if problem is None else problem in (got or "")


def test_format_score_needs_both_turns() -> None:
    assert format_score(GOOD_1, GOOD_2).value == 1.0
    bad = format_score(GOOD_1, "<answer>B</answer>")
    assert bad.value == 0.0 and bad.reason is not None and bad.reason.startswith("stage 2:")
    bad = format_score("<think>x</think>", GOOD_2)
    assert bad.value == 0.0 and bad.reason is not None and bad.reason.startswith("stage 1:")
    assert not bad.failed
