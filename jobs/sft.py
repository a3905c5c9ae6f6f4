"""Warm start: supervised fine-tuning on synthetic two-stage transcripts.

    python -m jobs.sft --model runs/demo/tiny-model --out runs/demo/sft-model [--steps 200]

A random tiny model never writes a `<zoom>` box, so GRPO would have nothing to compare. Each
transcript is an episode as the rollout builds it (same chat tokens, same geometry): stage 1
names a box around the ground truth, widened by a random margin (as a policy unsure of the
exact spot would), stage 2 answers with the right letter; only the two replies are trained.
It teaches the format and roughly where to look; GRPO then improves what imitation cannot.
Runs one learner rank in this process (no Ray).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

from actors.chat_tokens import ChatTokens
from core.geometry import parse_zoom, resize_to_budget, zoom
from core.prompts import Message, PromptTemplates, coarse_messages, fine_messages, verifier_messages
from core.sample import OPTION_LETTERS, Sample
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig
from learners.group import normalizer
from learners.worker import LearnerWorker

logger = logging.getLogger(__name__)


def transcripts(
    sample: Sample, chat: ChatTokens, templates: PromptTemplates, budget: int, margin: float
) -> list[TrainRow]:
    """One ideal episode as token ids, images and a mask over the two replies; and the same
    crop answered in the verifier's format, so that a frozen copy of the warm-started model
    can serve as the demo's region verifier (it must answer a letter from the crop alone)."""
    assert sample.gt_box is not None, "transcripts need a ground-truth box"
    original = sample.decode_image()
    coarse = resize_to_budget(original, budget)
    messages = coarse_messages(templates, sample, coarse.size)
    sx, sy = coarse.width / original.width, coarse.height / original.height
    x1, y1, x2, y2 = sample.gt_box
    pad_x, pad_y = margin * (x2 - x1) + 1, margin * (y2 - y1) + 1
    box = [
        max(0, round((x1 - pad_x) * sx)),
        max(0, round((y1 - pad_y) * sy)),
        min(coarse.width, round((x2 + pad_x) * sx)),
        min(coarse.height, round((y2 + pad_y) * sy)),
    ]
    stage1 = f"<think>Look near the object named.</think><zoom>[{', '.join(map(str, box))}]</zoom>"
    view = zoom(original, coarse.size, parse_zoom(stage1), budget)
    letter = sample.answer.strip().upper()
    option = sample.options[OPTION_LETTERS.index(letter)] if sample.options else letter
    stage2 = f"<think>It is {option}.</think><answer>{letter}</answer>"
    prompt = chat.prompt(messages)
    reply1 = [*chat.encode(stage1), chat.eos_token_id]
    glue = chat.continuation(
        messages, reply1, fine_messages(templates, sample, messages, stage1)[-1]
    )
    reply2 = [*chat.encode(stage2), chat.eos_token_id]
    ids = prompt + reply1 + glue + reply2
    mask = [0] * len(prompt) + [1] * len(reply1) + [0] * len(glue) + [1] * len(reply2)
    episode = TrainRow(ids, [coarse, view.image], mask, [0.0] * len(ids), 0.0)
    return [
        episode,
        _reply_row(
            chat,
            verifier_messages(templates, sample.question, sample.options),
            f"<answer>{letter}</answer>",
            [view.image],
        ),
    ]


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
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
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
    samples = generate(SyntheticConfig(), num=args.samples, seed=args.seed + 7)
    rows = [
        row
        for s in samples
        for row in transcripts(s, chat, templates, args.budget, float(rng.uniform(1, 6)))
    ]
    config = LearnerConfig(
        model=model,
        objective="sft",
        micro_batch_size=args.batch,
        optim=OptimConfig(lr=args.lr, warmup_steps=10, schedule="cosine", total_steps=args.steps),
        seed=args.seed,
    )
    worker = LearnerWorker(config, rank=0, world_size=1)
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
    print(Path(args.out).resolve())


if __name__ == "__main__":
    main()
