"""Reading the answer out of a reply, and the accuracy reward.

Multiple choice: the reply's `<answer>` body (or, if configured, the whole reply) is read as an
option letter, in this order: the text of exactly one option; a lone letter (`B`, `(b)`, `[B].`);
a keyword (`answer: b`, `the answer is (C)`, `option D`); a leading letter (`B. red`,
`(B) red`); finally one distinct capital option letter standing alone (`I think B`). Two different
letters are ambiguous and score 0. Free form: normalized text (case, punctuation, articles,
spacing) must match exactly, or contain the truth if `free_form_match = "contains"`.
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict

from rewards.score import Score

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_LONE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_KEYWORD = re.compile(r"\b(?:answer|option|choice)\b[^A-Za-z]*(?:is\b)?\W*([A-Za-z])\b", re.I)
_LEADING = re.compile(r"[(\[]?([A-Za-z])(?:[)\].:]|\s*-)\s+\S")
_STANDALONE = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


class AccuracyConfig(BaseModel):
    """How answers are read and compared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    require_answer_tag: bool = True
    """Only the `<answer>` body counts; without the tag the answer is missing. If False, a
    reply without the tag is read whole."""
    free_form_match: Literal["exact", "contains"] = "exact"
    """Free-form answers: the normalized reply equals, or merely contains, the normalized truth."""


def answer_text(reply: str, require_tag: bool = True) -> str | None:
    """The last `<answer>` body, or the whole reply when the tag is not required."""
    bodies = _ANSWER.findall(reply)
    if bodies:
        return str(bodies[-1]).strip()
    return None if require_tag else reply.strip()


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    return " ".join(_ARTICLES.sub(" ", text).split())


def extract_choice(text: str, options: tuple[str, ...]) -> str | None:
    """The option letter a reply names, or None when it names none or several."""
    letters = string.ascii_uppercase[: len(options)]
    text = text.strip()
    by_text = [letters[i] for i, o in enumerate(options) if normalize(o) == normalize(text)]
    if len(by_text) == 1:
        return by_text[0]
    match = _LONE.fullmatch(text) or _KEYWORD.search(text) or _LEADING.match(text)
    if match is not None:
        letter = match.group(1).upper()
        return letter if letter in letters else None
    named = {m for m in _STANDALONE.findall(text) if m in letters}
    return named.pop() if len(named) == 1 else None


def match_answer(reply: str, truth: str, options: tuple[str, ...], config: AccuracyConfig) -> Score:
    """1 if the reply's answer matches `truth` (a letter for multiple choice)."""
    answer = answer_text(reply, config.require_answer_tag)
    if answer is None:
        return Score.zero("no <answer> tag")
    if not answer:
        return Score.zero("empty answer")
    if options:
        letter = extract_choice(answer, options)
        if letter is None:
            return Score.zero(f"no option letter in {answer[:40]!r}")
        return Score.ok() if letter == truth.strip().upper() else Score.zero(f"chose {letter}")
    got, want = normalize(answer), normalize(truth)
    hit = got == want if config.free_form_match == "exact" else f" {want} " in f" {got} "
    return Score.ok() if hit and want else Score.zero(f"{answer[:40]!r} does not match")
