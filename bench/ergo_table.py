"""ERGO's reward ablation in miniature: what each reward adds, against single-stage baselines.

    python bench/ergo_table.py [--steps 100] [--num-val 128] [--warm runs/demo/sft-model]
        [--runs all no-region no-box accuracy-format] [--out runs/ergo_table]

From one warm start and one seed, GRPO runs the demo's config (`configs/demo.toml`, the stripes
task) once per reward set:
- all: region 1, box 0.5, accuracy 1, format 1 (ERGO's weights);
- no-region, no-box: the same without that reward (still scored and logged, weight 0);
- accuracy-format: accuracy and format only.
Then the warm start answers the same held-out samples single-stage (`jobs.eval`): the whole
image at the two-stage episode's total vision tokens (coarse + crop), and at full resolution.
Prints one table: greedy held-out accuracy (step 0 and final), region score, IoU with the
ground-truth box, crop area over image area, vision tokens per sample, fallback rate and steps.
Every number comes from the jobs' own validation and reports; nothing is re-scored here.
Missing warm start: builds the tiny model and `jobs.sft` into `--out` first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from core.dataset import write_samples
from core.synthetic import DEMO_COARSE_TOKENS, generate
from jobs.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.toml"
RUNS = {
    "all": {"region": 1.0, "box": 0.5, "accuracy": 1.0, "format": 1.0},
    "no-region": {"region": 0.0, "box": 0.5, "accuracy": 1.0, "format": 1.0},
    "no-box": {"region": 1.0, "box": 0.0, "accuracy": 1.0, "format": 1.0},
    "accuracy-format": {"region": 0.0, "box": 0.0, "accuracy": 1.0, "format": 1.0},
}
COLUMNS = ("accuracy", "region", "iou", "box_area_ratio", "vision_tokens", "fallback_rate")
FULL_RESOLUTION = 16384  # Qwen's default cap: the whole 2048x1536 image at full size


def job(*args: str) -> None:
    """Run `python -m ARGS` from the repository root; its failure stops the bench."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: python -m {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def warm_start(path: str | None, out: Path) -> Path:
    if path is not None:
        return Path(path).resolve()
    tiny, warm = out / "tiny-model", out / "sft-model"
    if not (warm / "model.safetensors").exists():
        job("jobs.make_tiny_model", "--out", str(tiny))
        job("jobs.sft", "--model", str(tiny), "--out", str(warm))
    return warm


def grpo(name: str, warm: Path, steps: int, num_val: int, out: Path) -> dict[str, float]:
    """One GRPO run with reward set `name`; its step-0 and final validation."""
    run_dir = out / name
    weights = {**RUNS[name], "iou": 0.0}  # every listed weight: the dict replaces the default
    job(
        "jobs.train", "--config", str(CONFIG), "--model", str(warm),
        "--train.steps", str(steps), "--train.val_every", str(steps),
        "--train.checkpoint_every", str(steps), "--train.samples_every", str(steps),
        "--data.num_val", str(num_val), "--train.run_dir", str(run_dir),
        "--tracking.experiment", "ergo-table",
        *(a for k, v in weights.items() for a in (f"--rewards.rewards.weights.{k}", str(v))),
    )  # fmt: skip
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("ergo-table").experiment_id])
    row: dict[str, float] = {"steps": float(steps)}
    for column in COLUMNS:
        history = sorted(client.get_metric_history(run.info.run_id, f"val/{column}"), key=_step)
        row[column] = history[-1].value
        if column == "accuracy":
            row["accuracy_step0"] = history[0].value
    return row


def _step(metric) -> int:  # type: ignore[no-untyped-def]
    return int(metric.step)


def single_stage(warm: Path, val: Path, caps: list[int], out: Path) -> dict[str, dict[str, float]]:
    """The warm start answering from the whole image, at each cap, on the held-out samples."""
    folder = out / "single-stage"
    job(
        "jobs.eval", "--dataset", "synthetic", "--data-root", str(val), "--model", str(warm),
        "--mode", "single-stage", "--max-vision-tokens", *map(str, caps),
        "--max-new-tokens", "16", "--batch-size", "16", "--out", str(folder),
    )  # fmt: skip
    report = json.loads((folder / "report.json").read_text())
    rows = {}
    for run in report["runs"]:
        rows[f"single-stage, cap {run['max_vision_tokens']}"] = {
            "accuracy": run["accuracy"],
            "vision_tokens": run["vision_tokens"]["total"],
            "steps": 0.0,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--num-val", type=int, default=128)
    parser.add_argument("--warm", help="warm-started model (default: build one under --out)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ergo_table")
    args = parser.parse_args()
    out = args.out.resolve()
    warm = warm_start(args.warm, out)
    demo = load_config(CONFIG)
    val = out / "val.parquet"  # the train job's held-out split (same config, seed, count)
    write_samples(val, generate(demo.data.synthetic, args.num_val, demo.data.seed + 1_000_003))
    episode = demo.rollout.episode
    two_stage_tokens = episode.coarse_max_tokens + episode.crop_max_tokens
    rows = {name: grpo(name, warm, args.steps, args.num_val, out) for name in args.runs}
    rows |= single_stage(warm, val, [two_stage_tokens, FULL_RESOLUTION], out)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    print_table(rows, args.num_val)


def print_table(rows: dict[str, dict[str, float]], num_val: int) -> None:
    print(f"held-out: {num_val} samples, greedy (stripes task, coarse {DEMO_COARSE_TOKENS} tokens)")
    head = ("run", "acc@0", "acc", "region", "iou", "crop/img", "vis.tok", "fallback", "steps")
    print(f"{head[0]:28s}" + "".join(f"{h:>9s}" for h in head[1:]))
    for name, row in rows.items():
        cells = [row.get(k) for k in ("accuracy_step0", *COLUMNS, "steps")]
        print(f"{name:28s}" + "".join(f"{_cell(v):>9s}" for v in cells))


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


if __name__ == "__main__":
    main()
