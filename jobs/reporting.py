"""What the train job reports besides the learner's numbers: rollout statistics, sample
trajectories drawn for people, and reward curves.

Rollout statistics are computed over every trajectory of the step (all rollout actors' output
together), failures included in every denominator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from core.geometry import QWEN_DEFAULT_MAX_TOKENS, budget_tokens
from core.trajectory import Trajectory
from rewards.registry import RewardResult


def rollout_metrics(trajectories: Sequence[Trajectory], seconds: float) -> dict[str, float]:
    """Vision tokens per sample against the full-resolution count, fallbacks, failures, speed."""
    n = max(1, len(trajectories))
    ran = [t for t in trajectories if t.failure is None]
    full = [budget_tokens(*t.original_size, QWEN_DEFAULT_MAX_TOKENS) for t in ran]
    areas = [_area_ratio(t) for t in ran]
    tokens = sum(t.num_policy_tokens for t in trajectories)
    return {
        "rollout/trajectories": float(len(trajectories)),
        "rollout/failed": sum(t.failure is not None for t in trajectories) / n,
        "rollout/fallback_rate": sum(t.fallback is not None for t in ran) / n,
        "rollout/vision_tokens_coarse": sum(t.coarse_tokens for t in ran) / max(1, len(ran)),
        "rollout/vision_tokens_crop": sum(t.crop_tokens for t in ran) / max(1, len(ran)),
        "rollout/vision_tokens_total": sum(t.vision_tokens for t in ran) / max(1, len(ran)),
        "rollout/vision_tokens_full_resolution": sum(full) / max(1, len(full)),
        "rollout/box_area_ratio": sum(areas) / max(1, len(areas)),
        "rollout/policy_tokens": tokens / n,
        "rollout/tokens_per_s": tokens / max(seconds, 1e-9),
    }


def write_samples(
    folder: Path, trajectories: Sequence[Trajectory], results: Sequence[RewardResult], count: int
) -> Path:
    """The first `count` trajectories for people: texts and scores in `samples.json`, and the
    coarse view with the predicted (red) and ground-truth (green) boxes, and the crop."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (t, r) in enumerate(list(zip(trajectories, results, strict=True))[:count]):
        records.append(
            {
                "prompt_id": t.prompt_id,
                "group_index": t.group_index,
                "question": t.sample.question,
                "options": list(t.sample.options),
                "answer": t.sample.answer,
                "stage1": t.stage1_text,
                "stage2": t.stage2_text,
                "crop_box": t.crop_box,
                "fallback": t.fallback,
                "failure": t.failure,
                "scores": {k: [s.value, s.reason] for k, s in r.scores.items()},
                "total": r.total,
            }
        )
        if len(t.images) == 2:
            _boxed_coarse(t).save(folder / f"{i:02d}-coarse.png")
            t.images[1].save(folder / f"{i:02d}-crop.png")
    (folder / "samples.json").write_text(json.dumps(records, indent=2))
    return folder


def plot_curves(history: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """One panel per metric, step on x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(history)
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        steps, values = zip(*history[name], strict=True) if history[name] else ((), ())
        ax.plot(steps, values, marker=".", alpha=0.5 if len(values) >= 10 else 1.0)
        if len(values) >= 10:  # the first and last 20% of steps, as the README compares them
            fifth = len(values) // 5
            for part in (slice(0, fifth), slice(len(values) - fifth, None)):
                mean = sum(values[part]) / fifth
                ax.hlines(mean, steps[part][0], steps[part][-1], colors="red", linewidth=2)
                ax.annotate(f"{mean:.2f}", (steps[part][0], mean), fontsize=8, color="red")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _area_ratio(t: Trajectory) -> float:
    width, height = t.original_size
    if t.crop_box is None or width * height == 0:
        return 1.0
    x1, y1, x2, y2 = t.crop_box
    return (x2 - x1) * (y2 - y1) / (width * height)


def _boxed_coarse(t: Trajectory) -> Image.Image:
    coarse = t.images[0].convert("RGB").copy()
    draw = ImageDraw.Draw(coarse)
    sx = coarse.width / max(1, t.original_size[0])
    sy = coarse.height / max(1, t.original_size[1])
    for box, colour in ((t.crop_box, "red"), (t.sample.gt_box, "lime")):
        if box is not None:
            x1, y1, x2, y2 = box
            draw.rectangle((x1 * sx, y1 * sy, x2 * sx, y2 * sy), outline=colour, width=1)
    return coarse
