"""The format reward: both assistant turns are well formed.

Stage 1: a `<think>` block, then exactly one `<zoom>[x1, y1, x2, y2]</zoom>` holding four numbers,
and nothing after it. Stage 2: a `<think>` block, then exactly one non-empty `<answer>`, and
nothing after it. The paper does not publish its rule; this one is ours (see docs/rewards.md).
"""

from __future__ import annotations

import re

from rewards.score import Score

_NUMBER = r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*"
_BOX = re.compile(rf"\[{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\]", re.ASCII)


def check_turn(text: str, tag: str) -> tuple[str | None, str]:
    """Checks `<think>..</think><tag>..</tag>`: (why it is malformed or None, the tag's body)."""
    for name in ("think", tag):
        opened, closed = text.count(f"<{name}>"), text.count(f"</{name}>")
        if opened != 1 or closed != 1:
            return f"{opened} <{name}> and {closed} </{name}> tags (need one each)", ""
    match = re.fullmatch(rf"\s*<think>.*?</think>\s*<{tag}>(.*?)</{tag}>\s*", text, re.DOTALL)
    if match is None:
        return f"text outside <think></think><{tag}></{tag}>", ""
    return None, match.group(1).strip()


def check_stage1(text: str) -> str | None:
    """Why stage 1's text is malformed (None when it is well formed)."""
    problem, body = check_turn(text, "zoom")
    if problem is None and _BOX.fullmatch(body) is None:
        return f"zoom box {body!r} is not [x1, y1, x2, y2]"
    return problem


def check_stage2(text: str) -> str | None:
    """Why stage 2's text is malformed (None when it is well formed)."""
    problem, body = check_turn(text, "answer")
    if problem is None and not body:
        return "empty <answer>"
    return problem


def format_score(stage1: str, stage2: str) -> Score:
    """1 when both turns are well formed; otherwise 0 and the first problem found."""
    for stage, reason in (("stage 1", check_stage1(stage1)), ("stage 2", check_stage2(stage2))):
        if reason is not None:
            return Score.zero(f"{stage}: {reason}")
    return Score.ok()
