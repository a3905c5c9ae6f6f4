"""Prompt templates: loaded from TOML, stage 1 without options, stage 2 with them; a file with
unknown placeholders or missing fields is refused, naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.prompts import (
    DEFAULT_PROMPTS,
    PromptTemplates,
    check_prompts_file,
    coarse_messages,
    fine_messages,
    format_options,
)
from core.sample import Sample


def _sample(options: tuple[str, ...] = ("red", "blue", "green", "pink")) -> Sample:
    return Sample(
        id="s1", image=b"x", question="What colour is the kite?", options=options, answer="B"
    )


def test_default_templates_load_and_stage1_hides_options() -> None:
    templates = PromptTemplates.load()
    stage1 = coarse_messages(templates, _sample(), (252, 196))
    text = stage1[-1]["content"][1]["text"]
    assert "What colour is the kite?" in text and "252x196" in text
    assert "blue" not in text
    assert stage1[-1]["content"][0] == {"type": "image"}


def test_stage2_continues_stage1_with_the_reply_crop_and_options() -> None:
    templates = PromptTemplates.load()
    stage1 = coarse_messages(templates, _sample(), (252, 196))
    stage2 = fine_messages(templates, _sample(), stage1, "<zoom>[1, 2, 3, 4]</zoom>")
    assert stage2[: len(stage1)] == stage1
    assert stage2[len(stage1)] == {"role": "assistant", "content": "<zoom>[1, 2, 3, 4]</zoom>"}
    text = stage2[-1]["content"][1]["text"]
    assert "A. red\nB. blue\nC. green\nD. pink" in text
    free = fine_messages(templates, _sample(options=()), stage1, "x")
    assert "Options" not in free[-1]["content"][1]["text"]


def test_format_options() -> None:
    assert format_options(("a", "b")) == "A. a\nB. b"


def test_templates_reject_unknown_and_missing_fields(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    fields = ["system", "coarse", "fine", "fine_free_form", "verifier", "extra"]
    bad.write_text("".join(f'{name} = "x"\n' for name in fields))
    with pytest.raises(ValidationError):
        PromptTemplates.load(bad)
    bad.write_text('system = "s"\n')
    with pytest.raises(ValidationError):
        PromptTemplates.load(bad)


@pytest.mark.parametrize(
    ("field", "text", "complaint"),
    [
        ("coarse", "Look at {qestion}", "coarse: unknown placeholder 'qestion'"),
        ("fine", "{question} {options} {width}", "fine: unknown placeholder 'width'"),
        ("verifier", "{question} {}", "verifier: Replacement index 0"),
        ("fine_free_form", "{question", "fine_free_form: expected '}'"),
    ],
)
def test_templates_reject_placeholders_they_do_not_have(
    field: str, text: str, complaint: str
) -> None:
    fields = PromptTemplates.load().model_dump() | {field: text}
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        PromptTemplates.model_validate(fields)


def test_the_system_text_is_not_formatted() -> None:
    fields = PromptTemplates.load().model_dump() | {"system": "Reply in JSON: {}"}
    assert PromptTemplates.model_validate(fields).system == "Reply in JSON: {}"


def test_a_prompt_file_is_checked_and_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.toml").write_text(DEFAULT_PROMPTS.read_text())
    monkeypatch.chdir(tmp_path)
    assert check_prompts_file("mine.toml") == str(tmp_path / "mine.toml")
    (tmp_path / "broken.toml").write_text('system = "unclosed\n')
    (tmp_path / "short.toml").write_text('system = "s"\n')
    for name, complaint in [
        ("absent.toml", "prompt file absent.toml: No such file or directory"),
        ("broken.toml", "prompt file broken.toml is not valid TOML"),
        ("short.toml", "prompt file short.toml: coarse: Field required"),
    ]:
        with pytest.raises(ValueError, match=re.escape(complaint)):
            check_prompts_file(name)
