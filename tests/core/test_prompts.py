"""Prompt templates: loaded from TOML, stage 1 without options, stage 2 with them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.prompts import PromptTemplates, coarse_messages, fine_messages, format_options
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
