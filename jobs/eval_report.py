"""What the eval job reports: one record per sample, a summary per run, and the efficiency plot.

A run is one (mode, vision-token cap) pass over a benchmark. Every sample of the benchmark is
one `EvalRecord`, including those that could not run (an unreadable row, an engine error): they
are wrong answers, counted in every accuracy denominator and listed by id, never dropped.
Vision tokens, latency and the box fallback rate are averaged over the samples that ran
(a failure has no tokens or latency to average).

HR-Bench asks every question several times, its options cyclically shifted, and its rows name
their pass in `cycle_category`. Its runs add two scores to plain accuracy: `cyclic_accuracy`, the
fraction of questions whose every shifted copy was answered right (copies share a
`question_group`; a failed copy makes its question wrong), and `cycle_mean_accuracy`, the mean
over cycles of each cycle's accuracy (HR-Bench's own evaluation code reports this one).

Latency of a sample is the engine time of its turns (`time_stage1_s + time_stage2_s`): with
one sample per engine call (the eval job's default) that is its own latency; with larger
batches every member carries its batch's time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.geometry import QWEN_DEFAULT_MAX_TOKENS, budget_tokens
from core.trajectory import Trajectory
from rewards.answer import AccuracyConfig, match_answer, prediction

logger = logging.getLogger(__name__)

UNCATEGORIZED = "uncategorized"


@dataclass(frozen=True)
class EvalRecord:
    """One sample's outcome: what the model answered, what it looked at, what it cost."""

    id: str
    category: str
    answer: str
    prediction: str | None = None  # the option letter or free-form answer (strict: its letters)
    correct: bool = False
    reply: str = ""  # the answering turn
    stage1: str = ""  # the coarse turn (two-stage only)
    box: tuple[int, int, int, int] | None = None  # crop box, original pixels (two-stage only)
    fallback: str | None = None  # why the crop fell back to the whole image
    coarse_tokens: int = 0  # single-stage: the whole image, the only view
    crop_tokens: int = 0
    full_tokens: int = 0  # the original at Qwen's default cap, for comparison
    latency_s: float = 0.0
    failure: str | None = None
    question_group: str | None = None  # shared by a question's shifted copies (HR-Bench)
    cycle: str | None = None  # the pass of the benchmark this copy belongs to (HR-Bench)

    @property
    def total_tokens(self) -> int:
        return self.coarse_tokens + self.crop_tokens


def record_from_trajectory(t: Trajectory, accuracy: AccuracyConfig) -> EvalRecord:
    """The record of an episode (greedy, group size 1); a failed episode is a wrong answer."""
    sample = t.sample
    category = sample.category or UNCATEGORIZED
    if t.failure is not None:
        return EvalRecord(sample.id, category, sample.answer, failure=t.failure)
    score = match_answer(t.stage2_text, sample.answer, sample.options, accuracy)
    width, height = t.original_size
    return EvalRecord(
        id=sample.id,
        category=category,
        answer=sample.answer,
        prediction=prediction(t.stage2_text, sample.options, accuracy),
        correct=score.value == 1.0,
        reply=t.stage2_text,
        stage1=t.stage1_text,
        box=t.crop_box if len(t.images) == 2 else None,
        fallback=t.fallback,
        coarse_tokens=t.coarse_tokens,
        crop_tokens=t.crop_tokens,
        full_tokens=budget_tokens(width, height, QWEN_DEFAULT_MAX_TOKENS) if width else 0,
        latency_s=t.time_stage1_s + t.time_stage2_s,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated; 0 for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _accuracy_block(records: Sequence[EvalRecord], cyclic: bool = True) -> dict[str, Any]:
    """Samples, correct, failed and accuracy; with question groups (and `cyclic`), the cyclic
    score too."""
    correct = sum(r.correct for r in records)
    block = {
        "samples": len(records),
        "correct": correct,
        "failed": sum(r.failure is not None for r in records),
        "accuracy": correct / len(records) if records else 0.0,
    }
    if cyclic and any(r.question_group is not None for r in records):
        block |= cyclic_block(records)
    return block


def cyclic_block(records: Sequence[EvalRecord]) -> dict[str, Any]:
    """Questions (records grouped by `question_group`; a record without one is its own
    question), how many had every copy right (a failure is wrong), and their share."""
    copies: dict[str, bool] = {}
    for r in records:
        key = r.question_group if r.question_group is not None else f"id:{r.id}"
        copies[key] = copies.get(key, True) and r.correct
    consistent = sum(copies.values())
    return {
        "questions": len(copies),
        "consistent": consistent,
        "cyclic_accuracy": consistent / len(copies) if copies else 0.0,
    }


def cycles_block(records: Sequence[EvalRecord]) -> dict[str, Any]:
    """Accuracy per cycle (records without one: `uncategorized`) and its mean over cycles;
    empty when no record names a cycle."""
    if all(r.cycle is None for r in records):
        return {}
    names = sorted({r.cycle or UNCATEGORIZED for r in records})
    cycles = {
        c: _accuracy_block([r for r in records if (r.cycle or UNCATEGORIZED) == c], cyclic=False)
        for c in names
    }
    mean = sum(block["accuracy"] for block in cycles.values()) / len(cycles)
    questions = len({r.question_group for r in records})
    if len(cycles) > 1 and questions == len(records):
        logger.warning(
            "%d cycles but no question with more than one copy: the shifted copies differ in "
            "question text, option texts or image bytes, so cyclic_accuracy equals accuracy",
            len(cycles),
        )
    return {"cycles": cycles, "cycle_mean_accuracy": mean}


def summarize(records: Sequence[EvalRecord], run: dict[str, Any]) -> dict[str, Any]:
    """The report of one run: `run` (dataset, mode, cap, ...) plus accuracy overall and per
    category (and, with question groups or cycles, the cyclic scores), vision tokens, latency,
    fallback rate and the failures by id."""
    ran = [r for r in records if r.failure is None]
    categories = sorted({r.category for r in records})
    latencies = [r.latency_s for r in ran]
    two_stage = run.get("mode") == "two-stage"
    return {
        **run,
        **_accuracy_block(records),
        "categories": {
            c: _accuracy_block([r for r in records if r.category == c]) for c in categories
        },
        **cycles_block(records),
        "vision_tokens": {
            "coarse": _mean([r.coarse_tokens for r in ran]),
            "crop": _mean([r.crop_tokens for r in ran]),
            "total": _mean([r.total_tokens for r in ran]),
            "full_resolution": _mean([r.full_tokens for r in ran]),
        },
        "latency_s": {
            "mean": _mean(latencies),
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
        },
        "fallback_rate": _mean([r.fallback is not None for r in ran]) if two_stage else None,
        "failures": [{"id": r.id, "reason": r.failure} for r in records if r.failure is not None],
    }


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat metrics with slash names (`eval/two-stage/accuracy`) for MLflow."""
    prefix = f"eval/{summary['mode']}"
    metrics = {
        f"{prefix}/accuracy": summary["accuracy"],
        f"{prefix}/failed": float(summary["failed"]),
        **{
            f"{prefix}/{key}": summary[key]
            for key in ("cyclic_accuracy", "cycle_mean_accuracy")
            if key in summary
        },
        **{f"{prefix}/vision_tokens_{k}": v for k, v in summary["vision_tokens"].items()},
        **{f"{prefix}/latency_{k}_s": v for k, v in summary["latency_s"].items()},
        **{
            f"{prefix}/accuracy/{_metric_name(c)}": block["accuracy"]
            for c, block in summary["categories"].items()
        },
    }
    if summary.get("fallback_rate") is not None:
        metrics[f"{prefix}/fallback_rate"] = summary["fallback_rate"]
    return metrics


def _metric_name(category: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-. /" else "_" for ch in category)


RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("category", pa.string()),
        ("answer", pa.string()),
        ("prediction", pa.string()),
        ("correct", pa.bool_()),
        ("reply", pa.string()),
        ("stage1", pa.string()),
        ("box", pa.list_(pa.int32())),
        ("fallback", pa.string()),
        ("coarse_tokens", pa.int32()),
        ("crop_tokens", pa.int32()),
        ("total_tokens", pa.int32()),
        ("full_tokens", pa.int32()),
        ("latency_s", pa.float64()),
        ("failure", pa.string()),
        ("question_group", pa.string()),
        ("cycle", pa.string()),
    ]
)


def write_records(path: Path, records: Sequence[EvalRecord]) -> Path:
    """One parquet row per sample (`RECORD_SCHEMA`)."""
    rows = [
        {**asdict(r), "box": None if r.box is None else list(r.box), "total_tokens": r.total_tokens}
        for r in records
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), path)
    return path


def write_report(path: Path, summaries: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": list(summaries)}, indent=2))
    return path


def plot_efficiency(summaries: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy against mean vision tokens per sample: one point per (mode, cap), joined by
    mode and labelled with the cap, like the paper's efficiency plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in sorted({s["mode"] for s in summaries}):
        points = sorted(
            (s["vision_tokens"]["total"], 100 * s["accuracy"], s["max_vision_tokens"])
            for s in summaries
            if s["mode"] == mode
        )
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
        for x, y, cap in points:
            ax.annotate(f"cap {cap}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    accuracies = [100 * s["accuracy"] for s in summaries]
    ax.set_ylim(max(0.0, min(accuracies) - 5), min(100.0, max(accuracies) + 5))
    datasets = sorted({str(s.get("dataset", "")) for s in summaries})
    ax.set_xlabel("vision tokens per sample (mean)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"accuracy vs vision tokens: {', '.join(datasets)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for people."""
    tokens, latency = summary["vision_tokens"], summary["latency_s"]
    fallback = summary.get("fallback_rate")
    lines = [
        f"{summary.get('dataset')} {summary['mode']} cap {summary['max_vision_tokens']}: "
        f"accuracy {summary['accuracy']:.3f} ({summary['correct']}/{summary['samples']}, "
        f"{summary['failed']} failed)",
        f"  vision tokens/sample: coarse {tokens['coarse']:.0f} + crop {tokens['crop']:.0f} = "
        f"{tokens['total']:.0f} (full resolution {tokens['full_resolution']:.0f})",
        f"  latency/sample: mean {latency['mean']:.3f} s, p50 {latency['p50']:.3f} s, "
        f"p95 {latency['p95']:.3f} s"
        + ("" if fallback is None else f"; box fallback rate {fallback:.2f}"),
    ]
    if "cyclic_accuracy" in summary:
        lines.append(
            f"  cyclic (every shifted copy right): {summary['cyclic_accuracy']:.3f} "
            f"({summary['consistent']}/{summary['questions']} questions)"
        )
    if "cycle_mean_accuracy" in summary:
        lines.append(
            f"  mean over {len(summary['cycles'])} cycles: {summary['cycle_mean_accuracy']:.3f}"
        )
    for category, block in summary["categories"].items():
        lines.append(
            f"  {category}: {block['accuracy']:.3f} ({block['correct']}/{block['samples']})"
        )
    if summary["failures"]:
        listed = ", ".join(f["id"] for f in summary["failures"][:10])
        more = len(summary["failures"]) - 10
        lines.append(f"  failed: {listed}" + (f" and {more} more" if more > 0 else ""))
    return "\n".join(lines)
