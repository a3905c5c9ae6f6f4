"""Warm start: supervised fine-tuning on synthetic two-stage transcripts.

    python -m jobs.sft --model runs/demo/tiny-model --out runs/demo/sft-model [--steps 200]

Every field of `SftConfig` is a `--field value` override; `--config FILE` reads them from TOML.

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
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoTokenizer

from actors.chat_tokens import ChatTokens
from core.geometry import parse_zoom, resize_to_budget, zoom
from core.prompts import Message, PromptTemplates, coarse_messages, fine_messages, verifier_messages
from core.sample import OPTION_LETTERS, Sample
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from jobs.config import parse_job_args
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


class SftConfig(BaseModel):
    """The warm start's settings; every field is a `--field value` override (jobs/config.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    """The model to fine-tune (a folder)."""
    out: str = Field(min_length=1)
    """Folder the fine-tuned model is written to."""
    samples: int = Field(256, ge=1)
    """Synthetic samples, one transcript pair each."""
    steps: int = Field(150, ge=1)
    """Optimizer steps."""
    batch: int = Field(8, ge=1)
    """Rows per step."""
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate (cosine schedule, 10 warm-up steps)."""
    budget: int = Field(DEMO_COARSE_TOKENS, ge=4)
    """Vision tokens of the coarse view and of the crop."""
    seed: int = 0
    """Seed of the data (seed + 7, apart from the demo's) and of the batches."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML file of SftConfig fields (default: none)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    job, _ = parse_job_args(SftConfig, parser, argv)
    chat = ChatTokens(AutoTokenizer.from_pretrained(job.model))
    templates = PromptTemplates.load()
    rng = np.random.default_rng(job.seed)
    samples = generate(SyntheticConfig(), num=job.samples, seed=job.seed + 7)
    rows = [
        row
        for s in samples
        for row in transcripts(s, chat, templates, job.budget, float(rng.uniform(1, 6)))
    ]
    config = LearnerConfig(
        model=job.model,
        objective="sft",
        micro_batch_size=job.batch,
        optim=OptimConfig(lr=job.lr, warmup_steps=10, schedule="cosine", total_steps=job.steps),
        seed=job.seed,
    )
    worker = LearnerWorker(config, rank=0, world_size=1)
    worker.setup(worker.rendezvous())
    try:
        for step in range(job.steps):
            batch = [rows[int(i)] for i in rng.choice(len(rows), job.batch, replace=False)]
            metrics = worker.step(batch, normalizer(batch))
            if step % 10 == 0 or step == job.steps - 1:
                logger.info("sft step %d: nll %.3f", step, metrics["learner/loss"])
        worker.export_hf(str(Path(job.out).resolve()))
    finally:
        worker.shutdown()
    print(Path(job.out).resolve())


if __name__ == "__main__":
    main()
