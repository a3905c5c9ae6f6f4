"""Prompt templates and chat messages for ERGO's two stages.

Stage 1 (coarse): the coarse view and the question without options. Stage 2 (fine): the same
conversation plus the policy's stage-1 turn, then the crop and the full question with options.
The template text is ours and lives in a TOML file (`configs/prompts/ergo.toml` by default);
a released checkpoint may bring its own. Every job that builds prompts takes the file as a
`PromptsPath` field, which loads it while the config is validated, so that a missing or
malformed file fails at start, naming the file. Messages use the chat format of HF processors:
content parts `{"type": "image"}` and `{"type": "text", "text": ...}`; images travel
separately, in order of appearance.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.sample import OPTION_LETTERS, Sample

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "configs" / "prompts" / "ergo.toml"

Message = dict[str, Any]

# The `str.format` placeholders each template may use, with values of their kind for checking.
PLACEHOLDERS: dict[str, dict[str, Any]] = {
    "coarse": {"question": "q", "width": 1, "height": 1},
    "fine": {"question": "q", "options": "A. a"},
    "fine_free_form": {"question": "q"},
    "verifier": {"question": "q", "options": "Options:\nA. a\n"},
}


class PromptTemplates(BaseModel):
    """The text of both stages; `str.format` placeholders are listed per field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1)
    """System message opening every conversation."""
    coarse: str = Field(min_length=1)
    """Stage-1 user text. Placeholders: {question}, {width}, {height} (coarse-view pixels)."""
    fine: str = Field(min_length=1)
    """Stage-2 user text for multiple choice. Placeholders: {question}, {options}."""
    fine_free_form: str = Field(min_length=1)
    """Stage-2 user text for questions without options. Placeholder: {question}."""
    verifier: str = Field(min_length=1)
    """The verifier's user text, shown with the crop alone. Placeholders: {question}, {options}
    (`Options:` and one line per option, each line ending in a newline; empty for free form)."""

    @model_validator(mode="after")
    def _known_placeholders(self) -> PromptTemplates:
        """Every template formats with its own placeholders (a typo such as `{qestion}` would
        otherwise fail every episode at run time)."""
        for field, values in PLACEHOLDERS.items():
            try:
                getattr(self, field).format(**values)
            except (KeyError, IndexError, ValueError) as exc:
                known = ", ".join(f"{{{name}}}" for name in values)
                problem = f"unknown placeholder {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ValueError(f"{field}: {problem} (its placeholders: {known})") from exc
        return self

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PROMPTS) -> PromptTemplates:
        with open(path, "rb") as f:
            return cls.model_validate(tomllib.load(f))


def check_prompts_file(path: str) -> str:
    """`path` made absolute (actors do not share the job's working directory), once its
    templates load; otherwise a `ValueError` naming the file and what is wrong with it."""
    try:
        PromptTemplates.load(path)
    except OSError as exc:
        raise ValueError(f"prompt file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"prompt file {path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'templates'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"prompt file {path}: {problems}") from exc
    return str(Path(path).resolve())


PromptsPath = Annotated[str, AfterValidator(check_prompts_file)]
"""A config field naming a prompt templates TOML file, checked when the config is validated."""


def format_options(options: tuple[str, ...]) -> str:
    """One line per option: `A. text`."""
    return "\n".join(f"{OPTION_LETTERS[i]}. {text}" for i, text in enumerate(options))


def coarse_messages(
    templates: PromptTemplates, sample: Sample, coarse_size: tuple[int, int]
) -> list[Message]:
    """Stage-1 conversation: system, then the coarse image and the question (no options)."""
    width, height = coarse_size
    text = templates.coarse.format(question=sample.question, width=width, height=height)
    return [
        {"role": "system", "content": templates.system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]


def fine_messages(
    templates: PromptTemplates, sample: Sample, stage1: list[Message], stage1_reply: str
) -> list[Message]:
    """Stage-2 conversation: stage 1, the policy's reply, then the crop and the full question."""
    if sample.is_multiple_choice:
        text = templates.fine.format(
            question=sample.question, options=format_options(sample.options)
        )
    else:
        text = templates.fine_free_form.format(question=sample.question)
    return [
        *stage1,
        {"role": "assistant", "content": stage1_reply},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]


def verifier_messages(
    templates: PromptTemplates, question: str, options: tuple[str, ...]
) -> list[Message]:
    """The verifier's conversation: the crop (the only image) and the question with options."""
    listed = f"Options:\n{format_options(options)}\n" if options else ""
    text = templates.verifier.format(question=question, options=listed)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
