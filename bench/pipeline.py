"""Benchmark: synchronous against asynchronous GRPO (`train.max_staleness` 0, 1, 2), one run.

    python bench/pipeline.py [--steps 20] [--staleness 1 2] [--model runs/demo/sft-model]

Every mode trains the demo configuration (configs/demo.toml) from the same warm start, for the
same steps, with one learner rank and the off-policy correction on (`learner.grpo.tis_cap` 2)
in both. The roles get disjoint cores, so that the overlap is measured rather than the
contention: every thread of the rollout worker, the verifier and the reward actors is pinned to
core 0, the learner's to core 1, and each engine and the learner compute on one thread. Each
mode reports its steps/s over every step after the first (engine start-up and the first batch,
which nothing overlaps, excluded), the mean time per step of each role (rollout = rollout plus
the scoring left after it; learner = learning plus the weight sync), the share of the
verifier's time hidden behind stage 2 (`time/verifier_hidden`) and the greedy validation
accuracy on the held-out split before the first step and after the last. Targets (issue 15):
asynchronous steps/s >= 1.4x synchronous, and an asynchronous step <= 1.2x its slowest role.
Without the model it builds the demo's warm start first, as scripts/demo.sh does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

import ray
import torch
from mlflow.tracking import MlflowClient

from jobs.config import load_config
from jobs.train import Trainer

ROOT = Path(__file__).parents[1]
ROLLOUT_CORE, LEARNER_CORE = 0, 1
VAL_SAMPLES = 64  # configs/demo.toml's data.num_val


def pin(handle: Any, core: int) -> None:
    """Every thread of the actor's process onto `core`, and torch to one thread."""

    def apply(_: Any) -> None:
        for thread in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(thread), {core})
        torch.set_num_threads(1)

    ray.get(handle.__ray_call__.remote(apply))


def warm_start(model: Path) -> None:
    """The demo's warm start (scripts/demo.sh), if it is not there yet."""
    if (model / "model.safetensors").exists():
        return
    tiny = model.parent / "tiny-model"
    python = [sys.executable, "-m"]
    if not (tiny / "model.safetensors").exists():
        subprocess.run([*python, "jobs.make_tiny_model", "--out", str(tiny)], check=True)
    subprocess.run([*python, "jobs.sft", "--model", str(tiny), "--out", str(model)], check=True)


def run_mode(model: Path, staleness: int, steps: int, folder: Path) -> dict[str, float]:
    """Train one mode; its throughput, role times and final validation accuracy."""
    overrides = {
        "model": model,
        "train.run_dir": folder / f"k{staleness}",
        "train.steps": steps,
        "train.max_staleness": staleness,
        "train.val_every": 10 * steps,
        "train.samples_every": 10 * steps,
        "train.checkpoint_every": 10 * steps,
        "learner.world_size": 1,
        "learner.grpo.tis_cap": 2.0,
        "rollout.engine.cpu_threads": 1,
        "rewards.verifier.engine.cpu_threads": 1,
    }
    pairs = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    config = load_config(ROOT / "configs" / "demo.toml", pairs)
    trainer = Trainer(config, folder / f"k{staleness}")
    try:
        trainer.rollout.wait_ready()
        trainer.rewards.wait_ready()
        for pool in (trainer.rollout, trainer.rewards):
            for slot in pool.slots.values():
                pin(slot.handle, ROLLOUT_CORE)
        for verifier in trainer.verifiers:
            pin(verifier, ROLLOUT_CORE)
        for rank in trainer.learner.workers:
            pin(rank, LEARNER_CORE)
        run_id = trainer.fit(resume=False)
    finally:
        trainer.shutdown()
    client = MlflowClient(f"sqlite:///{folder / f'k{staleness}' / 'mlflow.db'}")

    def values(key: str, skip: int = 1) -> list[float]:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        return [m.value for m in history][skip:]  # by default not the first: it overlaps nothing

    rollout = [a + b for a, b in zip(values("time/rollout"), values("time/reward"), strict=True)]
    learner = [a + b for a, b in zip(values("time/learn"), values("time/sync"), strict=True)]
    return {
        "steps_per_s": len(values("time/step")) / sum(values("time/step")),
        "step_s": mean(values("time/step")),
        "rollout_s": mean(rollout),
        "learner_s": mean(learner),
        "verifier_hidden": mean(values("time/verifier_hidden") or [float("nan")]),
        "val_start": values("val/accuracy", skip=0)[0],
        "val_accuracy": values("val/accuracy", skip=0)[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--staleness", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "demo" / "sft-model")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps: at least 2 (the first step overlaps nothing and is not counted)")
    if min(args.staleness) < 1:
        parser.error("--staleness: asynchronous modes are k >= 1 (k = 0 always runs first)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench/pipeline.py gives the roles disjoint cores: it needs 2")
    warm_start(args.model)
    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as folder:
        modes = {
            k: run_mode(args.model.resolve(), k, args.steps, Path(folder))
            for k in [0, *args.staleness]
        }
    print(
        f"{'mode':<14}{'steps/s':>9}{'step s':>8}{'rollout s':>11}{'learner s':>11}"
        f"{'verifier hidden':>17}{'val acc 0 -> end':>19}"
    )
    for k, result in modes.items():
        print(
            f"{'sync (k=0)' if k == 0 else f'async (k={k})':<14}{result['steps_per_s']:>9.3f}"
            f"{result['step_s']:>8.2f}{result['rollout_s']:>11.2f}{result['learner_s']:>11.2f}"
            f"{result['verifier_hidden']:>17.2f}"
            f"{result['val_start']:>12.3f} -> {result['val_accuracy']:.3f}"
        )
    sync = modes[0]
    for k in args.staleness:
        ahead = modes[k]
        slowest = max(ahead["rollout_s"], ahead["learner_s"])
        print(
            f"k={k}: async / sync steps/s {ahead['steps_per_s'] / sync['steps_per_s']:.2f}x"
            f" (target >= 1.4x); async step / slowest role {ahead['step_s'] / slowest:.2f}x"
            " (target <= 1.2x)"
        )
    print(f"validation: {VAL_SAMPLES} held-out samples, greedy, before step 1 and after the last")


if __name__ == "__main__":
    main()
