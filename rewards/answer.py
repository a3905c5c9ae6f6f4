"""Reading the answer out of a reply, and the accuracy reward.

The answer is the last `<answer>` body. Two ways to compare it with the truth
(`AccuracyConfig.answer_match`):

- `lenient` (default): the body (or, with `require_answer_tag = False`, a reply without the tag
  read whole) is read as an option letter. An explicit letter wins: a lone letter (`B`, `(b)`,
  `[B].`), a bracketed letter (`(C)`), a keyword (`answer: b`, `the answer is (C)`, `option D`)
  or a leading letter (`B. red`, `B) red`). Without one, the text of one option as whole words,
  articles ignored (`It is a white van`); of options that contain each other the longest
  (`dark red` over `red`). Last, one distinct capital option letter standing alone (`I think
  B`). `a`/`A` and `I` followed by a word are an article or a pronoun, never a letter (`A red
  car`, `I would say C`), unless the word is one of a few verbs and conjunctions (`A is right`,
  `A because ...`). Two letters, or two unrelated options, are ambiguous and score 0.
  Free form: normalized text (case, punctuation, articles, spacing) must match exactly, or
  contain the truth if `free_form_match = "contains"`.
- `strict` (ERGO's published protocol): the body, or the whole reply when there is no tag
  (`require_answer_tag` does not apply), keeps only its letters A-Z/a-z and must equal the
  truth's letters, case ignored: `(B)` is `B`, right for B; `B. red car` is `Bredcar`, wrong.
  Free form too; a truth without letters never matches.

Lenient is the default because a reward (and a report) should credit what a reader agrees the
reply chose; strict follows the published evaluation.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from rewards.score import Score

# `a`/`A`/`I` followed by a word is an article or a pronoun, unless the word reads as a clause
# about a letter (`A is right`, `the answer is A because ...`).
_AS_WORD = (
    r"(?![AaIi]\s+(?!(?:is|was|or|and|but|because|since|as|seems|looks|fits|matches)\b)"
    r"[A-Za-z])"
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_LONE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_KEYWORD = re.compile(
    rf"\b(?:answer|option|choice)\b[^A-Za-z]*(?:is\b)?\W*{_AS_WORD}([A-Za-z])\b", re.I
)
_BRACKETED = re.compile(r"(?<!\w)[(\[]([A-Za-z])[)\]]")
_LEADING = re.compile(r"[(\[]?([A-Za-z])(?:[)\].:]|\s*-)\s+\S")
_STANDALONE = re.compile(rf"(?<![\w']){_AS_WORD}([A-Z])(?![\w'])")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_NOT_LETTERS = re.compile(r"[^A-Za-z]+")


class AccuracyConfig(BaseModel):
    """How answers are read and compared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer_match: Literal["lenient", "strict"] = "lenient"
    """`lenient`: read the option letter (or normalized free-form text) a reader would agree
    with; `strict`: ERGO's protocol, the answer's letters A-Z equal the truth's, case ignored."""
    require_answer_tag: bool = True
    """Lenient only: only the `<answer>` body counts; without the tag the answer is missing. If
    False, a reply without the tag is read whole (strict always reads it whole)."""
    free_form_match: Literal["exact", "contains"] = "exact"
    """Lenient free-form answers: the normalized reply equals, or merely contains, the
    normalized truth."""

    @property
    def tag_required(self) -> bool:
        """Whether a reply without an `<answer>` tag has no answer."""
        return self.require_answer_tag and self.answer_match == "lenient"


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


def letters_only(text: str) -> str:
    """The text's letters A-Z, upper case: strict mode's reading."""
    return _NOT_LETTERS.sub("", text).upper()


def extract_choice(text: str, options: tuple[str, ...]) -> str | None:
    """The option letter a reply names, or None when it names none or several."""
    letters = string.ascii_uppercase[: len(options)]
    text = text.replace("*", "").strip()  # markdown emphasis: `**B**`
    marked = _marked_letters(text)
    if marked:
        return _one_of(marked, letters)
    by_text = _option_by_text(text, options)
    if by_text is not None:
        return letters[by_text]
    return _one_of({m for m in _STANDALONE.findall(text) if m in letters}, letters)


def _marked_letters(text: str) -> set[str]:
    """Letters the text marks explicitly: alone, bracketed, after a keyword, or leading."""
    lone = _LONE.fullmatch(text)
    if lone is not None:
        return {lone.group(1).upper()}
    found = [*_KEYWORD.finditer(text), *_BRACKETED.finditer(text), _LEADING.match(text)]
    return {m.group(1).upper() for m in found if m is not None}


def _one_of(found: set[str], letters: str) -> str | None:
    """The letter when exactly one distinct option letter was found."""
    return next(iter(found)) if len(found) == 1 and found <= set(letters) else None


def _option_by_text(text: str, options: tuple[str, ...]) -> int | None:
    """The index of the one option whose normalized text the reply contains as whole words;
    an option inside a longer matching one (`red` in `dark red`) yields to it."""
    said = _padded(normalize(text))
    named = {i: n for i, o in enumerate(options) if (n := normalize(o)) and _padded(n) in said}
    kept = [i for i, n in named.items() if not _within_another(n, named.values())]
    return kept[0] if len(kept) == 1 else None


def _within_another(name: str, names: Iterable[str]) -> bool:
    return any(other != name and _padded(name) in _padded(other) for other in names)


def _padded(text: str) -> str:
    return f" {text} "


def prediction(reply: str, options: tuple[str, ...], config: AccuracyConfig) -> str | None:
    """What the reply answers as `config` reads it: strict, the answer's letters; lenient, the
    option letter, or the free-form answer. None when there is no readable answer."""
    answer = answer_text(reply, config.tag_required)
    if not answer:
        return None
    if config.answer_match == "strict":
        return letters_only(answer) or None
    return extract_choice(answer, options) if options else answer


def match_answer(reply: str, truth: str, options: tuple[str, ...], config: AccuracyConfig) -> Score:
    """1 if the reply's answer matches `truth` (a letter for multiple choice)."""
    answer = answer_text(reply, config.tag_required)
    if answer is None:
        return Score.zero("no <answer> tag")
    if not answer:
        return Score.zero("empty answer")
    if config.answer_match == "strict":
        got, want = letters_only(answer), letters_only(truth)
        return Score.ok() if got == want and want else Score.zero(f"letters {got[:40]!r} differ")
    if options:
        letter = extract_choice(answer, options)
        if letter is None:
            return Score.zero(f"no option letter in {answer[:40]!r}")
        return Score.ok() if letter == truth.strip().upper() else Score.zero(f"chose {letter}")
    got, want = normalize(answer), normalize(truth)
    hit = got == want if config.free_form_match == "exact" else _padded(want) in _padded(got)
    return Score.ok() if hit and want else Score.zero(f"{answer[:40]!r} does not match")
