"""Build a tiny random-weight Qwen2.5-VL checkpoint that transformers and vLLM both load.

    python -m jobs.make_tiny_model --out DIR [--seed S]

No download: the tokenizer is a small byte-level BPE trained here on a fixed corpus, carrying
Qwen's special tokens and a chat template that renders images and multi-turn conversations.
Sizes follow what vLLM's CPU attention accepts (head_dim >= 32). The same seed gives
byte-identical weights. Real models are a path away: every job takes `--model PATH_OR_NAME`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from core.geometry import MIN_TOKENS, PATCH, QWEN_DEFAULT_MAX_TOKENS

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
VOCAB_SIZE = 1024
# Qwen2's pre-tokenizer split: digits one by one, words with their leading space.
_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# No whitespace control: the newlines after role names and <|im_end|> are part of Qwen's format.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_LINES = [
    "You are a helpful assistant. Look at the image and answer the question.",
    "First look at the whole image, think, then name one region to zoom into.",
    "<think>The large blue triangle is in the top left, the letter is next to it.</think>",
    "<zoom>[12, 40, 96, 120]</zoom> <zoom>[0, 0, 252, 196]</zoom>",
    "<answer>B</answer> <answer>(C) red</answer> Answer: A. The answer is D.",
    "Which letter is written next to the large red circle? What shape is near the green square?",
    "Options: (A) cat (B) dog (C) yellow (D) purple. Answer with the option's letter.",
    "Here is the region you asked for, cropped at full resolution.",
    "What is the color of the car? Is the flag on the left or right side of the building?",
]


def corpus() -> list[str]:
    """A fixed training corpus: the lines above, letters, digits and number-like boxes."""
    letters = " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    numbers = ", ".join(str(n) for n in range(0, 2048, 7))
    return [*_CORPUS_LINES * 20, letters, numbers]


def build_tokenizer() -> Qwen2Tokenizer:
    """Train a byte-level BPE with Qwen's pre-tokenizer and wrap it as a Qwen2 tokenizer."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus(), trainer=trainer)
    state = json.loads(bpe.to_str())
    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]
    ]
    vocab = state["model"]["vocab"]
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
    )


def build_config(
    tokenizer: Qwen2Tokenizer, hidden_size: int = 128, num_layers: int = 2
) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL with heads of 64 and a 2-block vision tower. The default (text hidden 128,
    2 layers) has 600k parameters; larger sizes serve benchmarks (512 x 4: 9M; 1024 x 12:
    103M)."""
    if hidden_size % 64:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of 64 (the head size)")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": hidden_size // 64,
        "num_key_value_heads": 1,
        "max_position_embeddings": 8192,  # a full-resolution 2048x1536 image is 4032 tokens
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": [8, 12, 12],
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "out_hidden_size": hidden_size,
        "fullatt_block_indexes": [1],
        "window_size": 112,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_processor(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLProcessor:
    """Images are resized by our own geometry; the processor accepts any size up to Qwen's cap."""
    pixels = {
        "min_pixels": MIN_TOKENS * PATCH * PATCH,
        "max_pixels": QWEN_DEFAULT_MAX_TOKENS * PATCH * PATCH,
    }
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(
    out: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2
) -> Path:
    """Write the checkpoint, processor and tokenizer into `out`; returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    config = build_config(tokenizer, hidden_size, num_layers)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    build_processor(tokenizer).save_pretrained(out)
    logger.info("tiny Qwen2.5-VL (%d parameters) written to %s", model.num_parameters(), out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--hidden-size", type=int, default=128, help="text hidden size")
    parser.add_argument("--layers", type=int, default=2, help="text decoder layers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = make_tiny_model(args.out, args.seed, args.hidden_size, args.layers)
    print(path)


if __name__ == "__main__":
    main()
