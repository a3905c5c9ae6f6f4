"""Warm start: supervised fine-tuning on what a base VLM already knows, not on ERGO's policy.

    python -m jobs.sft --model runs/demo/tiny-model --out runs/demo/sft-model [--steps 300]

A random tiny model can neither see nor write a `<zoom>` box, so GRPO would have nothing to
compare. The warm start teaches, on the synthetic task (`--task`, default stripes), three skills
a pretrained VLM brings, each from its own rows:
- grounding: "Locate the large blue star" on the coarse view, answered with its box;
- reading: a crop of one landmark in the verifier's format, answered with its option letter
  (so that a frozen copy of the warm-started model can serve as the region verifier);
- the two-turn format: ERGO's transcript, where stage 1 zooms on a landmark chosen AT RANDOM,
  not the one the question names, and stage 2 reports what that crop shows.
It does not teach which region to look at: a warm-started policy zooms on the named landmark
about one time in four (chance, with four landmarks). GRPO is what must teach it to look where
the question points. Runs one learner rank in this process (no Ray).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

from actors.chat_tokens import ChatTokens
from actors.engine import EngineConfig, Sampling, TokenPrompt
from actors.hf_engine import HFEngine
from core.geometry import parse_zoom, resize_to_budget, zoom
from core.prompts import Message, PromptTemplates, coarse_messages, fine_messages, verifier_messages
from core.sample import OPTION_LETTERS, Sample
from core.synthetic import (
    DEMO_COARSE_TOKENS,
    Landmark,
    SyntheticConfig,
    make_sample,
    make_scene,
    sample_rng,
)
from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig
from learners.group import normalizer
from learners.worker import LearnerWorker
from rewards.answer import AccuracyConfig, match_answer

logger = logging.getLogger(__name__)
GROUNDING = "Locate {name} in this image of {width}x{height} pixels. Reply with its box."


def warm_start_rows(
    config: SyntheticConfig,
    seed: int,
    index: int,
    chat: ChatTokens,
    templates: PromptTemplates,
    budget: int,
    rng: np.random.Generator,
) -> list[TrainRow]:
    """Grounding, reading and format rows for sample `index` of the dataset with `seed`."""
    sample = make_sample(config, seed, index)
    landmarks = make_scene(config, sample_rng(seed, index)).landmarks
    original = sample.decode_image()
    coarse = resize_to_budget(original, budget)
    scale = (coarse.width / original.width, coarse.height / original.height)
    named, shown = (landmarks[int(i)] for i in rng.integers(len(landmarks), size=2))
    text = GROUNDING.format(name=named.name, width=coarse.width, height=coarse.height)
    grounding = [
        {"role": "system", "content": templates.system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]
    box = _coarse_box(named, scale, margin=0.0)
    rows = [_reply_row(chat, grounding, f"[{', '.join(map(str, box))}]", [coarse])]

    read = _read_question(config, sample, named)
    crop = zoom(original, coarse.size, parse_zoom(_zoom(named, scale, rng)), budget).image
    messages = verifier_messages(templates, read, sample.options)
    rows.append(_reply_row(chat, messages, _letter(sample, named), [crop]))
    rows.append(_episode_row(sample, shown, chat, templates, (original, coarse), budget, rng))
    return rows


def _episode_row(
    sample: Sample,
    shown: Landmark,
    chat: ChatTokens,
    templates: PromptTemplates,
    views: tuple[Image.Image, Image.Image],
    budget: int,
    rng: np.random.Generator,
) -> TrainRow:
    """ERGO's two-turn transcript, zooming on `shown` (a random landmark) and reporting it."""
    original, coarse = views
    scale = (coarse.width / original.width, coarse.height / original.height)
    messages = coarse_messages(templates, sample, coarse.size)
    stage1 = f"<think>Look closer at one object.</think>{_zoom(shown, scale, rng)}"
    view = zoom(original, coarse.size, parse_zoom(stage1), budget)
    stage2 = f"<think>Read the crop.</think>{_letter(sample, shown)}"
    prompt = chat.prompt(messages)
    reply1 = [*chat.encode(stage1), chat.eos_token_id]
    glue = chat.continuation(
        messages, reply1, fine_messages(templates, sample, messages, stage1)[-1]
    )
    reply2 = [*chat.encode(stage2), chat.eos_token_id]
    ids = prompt + reply1 + glue + reply2
    mask = [0] * len(prompt) + [1] * len(reply1) + [0] * len(glue) + [1] * len(reply2)
    return TrainRow(ids, [coarse, view.image], mask, [0.0] * len(ids), 0.0)


def _coarse_box(landmark: Landmark, scale: tuple[float, float], margin: float) -> list[int]:
    x1, y1, x2, y2 = landmark.box
    pad_x, pad_y = margin * (x2 - x1), margin * (y2 - y1)
    sx, sy = scale
    return [
        max(0, round((x1 - pad_x) * sx)),
        max(0, round((y1 - pad_y) * sy)),
        round((x2 + pad_x) * sx),
        round((y2 + pad_y) * sy),
    ]


def _zoom(landmark: Landmark, scale: tuple[float, float], rng: np.random.Generator) -> str:
    """`<zoom>` on `landmark`, widened by a random margin (as a policy unsure of its edges)."""
    box = _coarse_box(landmark, scale, float(rng.uniform(0.0, 0.3)))
    return f"<zoom>[{', '.join(map(str, box))}]</zoom>"


def _read_question(config: SyntheticConfig, sample: Sample, landmark: Landmark) -> str:
    if config.task == "stripes":
        return f"Which way do the thin stripes inside {landmark.name} run?"
    return f"Which letter is written next to {landmark.name}?"


def _letter(sample: Sample, landmark: Landmark) -> str:
    """`<answer>X</answer>` with the option that is true of `landmark`."""
    truth = landmark.orientation if landmark.orientation is not None else landmark.glyph
    if truth not in sample.options:
        return "<answer>none</answer>"  # glyph task: another landmark's letter may be no option
    return f"<answer>{OPTION_LETTERS[sample.options.index(truth)]}</answer>"


def verifier_room(
    model: str, config: SyntheticConfig, seed: int, num: int, budget: int
) -> tuple[float, float]:
    """Greedy accuracy of `model` answering in the verifier's format from the ground-truth crop
    (the named landmark's box) and from a random crop (a box of random place and size, a tenth
    to a half of each side): the room the region reward has to move."""
    engine = HFEngine(EngineConfig(backend="hf", model=model))
    chat, templates = ChatTokens(AutoTokenizer.from_pretrained(model)), PromptTemplates.load()
    rng = np.random.default_rng(seed)
    prompts, samples = [], []
    for index in range(num):
        sample = make_sample(config, seed, index)
        original = sample.decode_image()
        assert sample.gt_box is not None
        w, h = original.size
        sw, sh = (int(v * rng.uniform(0.1, 0.5)) for v in (w, h))
        x, y = int(rng.integers(w - sw)), int(rng.integers(h - sh))
        truth = tuple(round(v) for v in sample.gt_box)
        for box in (truth, (x, y, x + sw, y + sh)):
            crop = resize_to_budget(original.crop(box), budget)
            messages = verifier_messages(templates, sample.question, sample.options)
            prompts.append(TokenPrompt(chat.prompt(messages), [crop]))
        samples.append(sample)
    replies = engine.generate(prompts, Sampling(max_tokens=8, temperature=0.0))
    engine.shutdown()
    right = [
        match_answer(chat.decode(r[0].token_ids), s.answer, s.options, AccuracyConfig()).value
        for s, r in zip([s for s in samples for _ in range(2)], replies, strict=True)
    ]
    return float(np.mean(right[0::2])), float(np.mean(right[1::2]))


def _reply_row(
    chat: ChatTokens, messages: list[Message], reply: str, images: list[Image.Image]
) -> TrainRow:
    prompt = chat.prompt(messages)
    ids = [*prompt, *chat.encode(reply), chat.eos_token_id]
    mask = [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    return TrainRow(ids, images, mask, [0.0] * len(ids), 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--task", choices=["stripes", "glyph"], default="stripes")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--budget", type=int, default=DEMO_COARSE_TOKENS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = str(Path(args.model).resolve())
    chat = ChatTokens(AutoTokenizer.from_pretrained(model))
    templates = PromptTemplates.load()
    rng = np.random.default_rng(args.seed)
    config = SyntheticConfig(task=args.task)
    data_seed = args.seed + 7  # not the demo's training or validation data (seed 0)
    rows = [
        row
        for index in range(args.samples)
        for row in warm_start_rows(config, data_seed, index, chat, templates, args.budget, rng)
    ]
    learner = LearnerConfig(
        model=model,
        objective="sft",
        micro_batch_size=args.batch,
        optim=OptimConfig(lr=args.lr, warmup_steps=10, schedule="cosine", total_steps=args.steps),
        seed=args.seed,
    )
    worker = LearnerWorker(learner, rank=0, world_size=1)
    worker.setup(worker.rendezvous())
    try:
        for step in range(args.steps):
            batch = [rows[int(i)] for i in rng.choice(len(rows), args.batch, replace=False)]
            metrics = worker.step(batch, normalizer(batch))
            if step % 10 == 0 or step == args.steps - 1:
                logger.info("sft step %d: nll %.3f", step, metrics["learner/loss"])
        worker.export_hf(str(Path(args.out).resolve()))
    finally:
        worker.shutdown()
    out = str(Path(args.out).resolve())
    truth, random = verifier_room(out, config, seed=args.seed + 8, num=64, budget=args.budget)
    logger.info("as verifier: %.2f right on ground-truth crops, %.2f on random ones", truth, random)
    print(out)


if __name__ == "__main__":
    main()
