"""Vision pretraining: give a random tiny model's vision encoder the features a base VLM has.

    python -m jobs.pretrain_vision --model runs/demo/tiny-model --out runs/demo/vision-model

A random vision encoder cannot tell which way thin stripes run, and supervised fine-tuning of
the whole model on crops does not teach it; nor does the tiny language model learn to ground a
landmark unless each image token says where it is (docs/stripes_task.md). This job trains the
vision encoder alone, with two linear probes a base VLM's features would pass:
- orientation: the mean-pooled output of a crop of one landmark (its box plus a random margin)
  classifies its stripes' orientation;
- position: each merged token of a whole scene's coarse view regresses its own row and column
  (as fractions of the grid).
The language model is untouched, the probes are thrown away, and the saved model is the input
with new vision weights. It never sees a question or a box: nothing about where to look. Logs
both probes on held-out images (other samples) as it trains.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from core.drawing import ORIENTATIONS
from core.geometry import resize_to_budget
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, make_sample, make_scene, sample_rng

logger = logging.getLogger(__name__)
POSITION_WEIGHT = 10.0  # the position loss (squared fractions, about 0.1 at chance) against CE


def landmark_crops(
    config: SyntheticConfig, seed: int, num: int, budget: int, rng: np.random.Generator
) -> tuple[list[Image.Image], np.ndarray, list[Image.Image]]:
    """A crop of every landmark of samples 0..num-1 (its box widened by 0 to 30% of its side
    each way, resized to `budget` tokens), its orientation's index in ORIENTATIONS, and every
    sample's coarse view at `budget` tokens."""
    images, labels, coarse = [], [], []
    for index in range(num):
        original = make_sample(config, seed, index).decode_image()
        coarse.append(resize_to_budget(original, budget))
        for landmark in make_scene(config, sample_rng(seed, index)).landmarks:
            assert landmark.orientation is not None, "vision pretraining needs the stripes task"
            x1, y1, x2, y2 = landmark.box
            pad = float(rng.uniform(0.0, 0.3)) * (x2 - x1)
            box = (round(x1 - pad), round(y1 - pad), round(x2 + pad), round(y2 + pad))
            images.append(resize_to_budget(original.crop(box), budget))
            labels.append(ORIENTATIONS.index(landmark.orientation))
    return images, np.array(labels), coarse


class Probe(torch.nn.Module):
    """The vision encoder, a linear head on its mean-pooled merged tokens per image, and a
    linear head that reads each merged token's position."""

    def __init__(self, model: Any, processor: Any, classes: int) -> None:
        super().__init__()
        self.visual: Any = model.model.visual
        self.processor = processor
        width = model.config.vision_config.out_hidden_size
        self.head = torch.nn.Linear(width, classes)
        self.where = torch.nn.Linear(width, 2)

    def forward(self, images: list[Image.Image]) -> torch.Tensor:
        """Class logits per image."""
        tokens, sizes, _ = self._tokens(images)
        return self.head(torch.stack([t.mean(0) for t in torch.split(tokens, sizes)]))

    def positions(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, true) (row, column) of every merged token, as fractions of its grid."""
        tokens, _, grids = self._tokens(images)
        truth = []
        for rows, cols in grids:
            r, c = torch.meshgrid(
                torch.arange(rows) / max(rows - 1, 1),
                torch.arange(cols) / max(cols - 1, 1),
                indexing="ij",
            )
            truth.append(torch.stack([r.flatten(), c.flatten()], 1))
        return self.where(tokens), torch.cat(truth)

    def _tokens(self, images: list[Image.Image]) -> tuple[torch.Tensor, list[int], list[Any]]:
        inputs = self.processor.image_processor(images=images, return_tensors="pt")
        grid = inputs["image_grid_thw"]
        out = self.visual(inputs["pixel_values"], grid_thw=grid)
        tokens = getattr(out, "pooler_output", out)  # merged tokens (newer transformers)
        m = self.visual.spatial_merge_size
        grids = [(h // m, w // m) for _, h, w in grid.tolist()]
        return tokens, [r * c for r, c in grids], grids


def pretrain(
    model_dir: str,
    out: str,
    steps: int,
    batch: int,
    lr: float,
    samples: int,
    seed: int,
    held_out: int = 16,
) -> float:
    """Trains the vision encoder of `model_dir` for `steps` on orientation, then `steps // 2`
    more on orientation and position together (position from the start slows orientation
    down), saves the model to `out`, and returns the orientation probe's final accuracy on the
    crops of `held_out` other scenes."""
    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    probe = Probe(model, processor, len(ORIENTATIONS))
    rng = np.random.default_rng(seed)
    config = SyntheticConfig(task="stripes")
    train_x, train_y, train_views = landmark_crops(
        config, seed + 7, samples, DEMO_COARSE_TOKENS, rng
    )
    held_x, held_y, held_views = landmark_crops(config, seed + 8, held_out, DEMO_COARSE_TOKENS, rng)
    params = [*probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr)
    start, accuracy = time.monotonic(), 0.0
    total = steps + steps // 2
    for step in range(total):
        probe.train()
        pick = rng.choice(len(train_x), batch, replace=False)
        logits = probe([train_x[i] for i in pick])
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(train_y[pick]))
        if step >= steps:
            views = rng.choice(len(train_views), max(1, batch // 2), replace=False)
            guess, truth = probe.positions([train_views[i] for i in views])
            loss = loss + POSITION_WEIGHT * torch.nn.functional.mse_loss(guess, truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == total - 1:
            probe.eval()
            with torch.no_grad():
                accuracy = float((probe(held_x).argmax(-1).numpy() == held_y).mean())
                guess, truth = probe.positions(held_views)
                r2 = 1 - ((guess - truth) ** 2).mean(0) / truth.var(0)
            logger.info(
                "vision step %d: loss %.3f, held-out orientation accuracy %.2f, position R^2 "
                "%.2f (rows) %.2f (columns) (%ds)",
                step, loss.item(), accuracy, r2[0], r2[1], time.monotonic() - start,
            )  # fmt: skip
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=128, help="scenes of 4 landmarks each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = str(Path(args.out).resolve())
    accuracy = pretrain(
        str(Path(args.model).resolve()), out, args.steps, args.batch, args.lr, args.samples,
        args.seed,
    )  # fmt: skip
    logger.info("held-out probe accuracy %.2f; saved %s", accuracy, out)
    print(out)


if __name__ == "__main__":
    main()
