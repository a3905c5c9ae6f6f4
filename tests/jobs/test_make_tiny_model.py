"""The tiny model: deterministic, offline, loadable and runnable by transformers."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from jobs.make_tiny_model import SPECIAL_TOKENS, make_tiny_model


def test_same_seed_gives_byte_identical_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = make_tiny_model(tmp_path / "again", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights


def test_config_carries_the_tokenizers_own_special_ids(
    tiny_model_dir: Path, tiny_processor
) -> None:
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    tok = tiny_processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert model.config.image_token_id == ids["<|image_pad|>"]
    assert model.config.vision_start_token_id == ids["<|vision_start|>"]
    assert model.config.text_config.eos_token_id == ids["<|im_end|>"]
    assert model.generation_config.eos_token_id == ids["<|im_end|>"]
    assert model.config.text_config.vocab_size == len(tok)
    assert max(ids.values()) < model.config.text_config.vocab_size


def test_chat_template_renders_images_and_turns(tiny_processor) -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": "<zoom>[1, 2, 3, 4]</zoom>"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
    ]
    text = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nsys<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where?<|im_end|>\n"
        "<|im_start|>assistant\n<zoom>[1, 2, 3, 4]</zoom><|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    tok = tiny_processor.tokenizer
    assert tok.decode(tok.encode(text)) == text


def test_transformers_generates_from_an_image(tiny_model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (112, 84), (10, 200, 30))
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == (112 // 28) * (84 // 28)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 8
    assert int(new.max()) < model.config.text_config.vocab_size
