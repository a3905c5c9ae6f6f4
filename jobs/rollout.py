"""Roll out two-stage trajectories with a pool of Ray actors hosting vLLM engines.

    python -m jobs.rollout [--model PATH] [--data PARQUET] [--num-samples N] [--group-size G]
                           [--workers N] [--out trajectories.parquet] [--address auto]

With no arguments it is the embedded demo: the tiny random-weight model and synthetic 2048x1536
samples are built under `runs/demo/` (once), a local Ray starts, one worker hosts a vLLM CPU
engine, and a batch of samples becomes `samples x G` trajectories: written to parquet and one
printed. A random model writes gibberish, so boxes fall back; the pipeline is the real one.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig, RolloutPool
from actors.rollout_worker import RolloutWorker
from core.dataset import iter_samples, write_samples
from core.geometry import QWEN_DEFAULT_MAX_TOKENS, budget_tokens
from core.prompts import DEFAULT_PROMPTS
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from core.trajectory import Trajectory, write_trajectories

logger = logging.getLogger(__name__)
DEMO_DIR = Path("runs/demo")


class RolloutConfig(BaseModel):
    """Everything a rollout pool needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    """The engine each worker hosts."""
    episode: EpisodeConfig = EpisodeConfig()
    """Budgets and sampling of both stages."""
    pool: PoolConfig = PoolConfig()
    """Pool size, dispatch and scaling."""
    resources: WorkerResources = WorkerResources()
    """Ray resources per worker."""
    prompts: str = str(DEFAULT_PROMPTS)
    """Prompt templates TOML."""


def make_rollout_pool(config: RolloutConfig) -> RolloutPool:
    """Wrap `RolloutWorker` as a Ray actor with the configured resources and start the pool."""
    actor = ray.remote(RolloutWorker).options(**config.resources.actor_options())

    def factory() -> Any:
        return actor.remote(config.engine, config.prompts)

    return RolloutPool(factory, config.pool, config.resources.bundle(), config.episode)


def ensure_demo_assets(root: Path, num_samples: int) -> tuple[Path, Path]:
    """The tiny model and a synthetic dataset under `root`, built only if missing."""
    from jobs.make_tiny_model import make_tiny_model

    model = root / "tiny-model"
    if not (model / "model.safetensors").exists():
        make_tiny_model(model, seed=0)
    data = root / "synthetic" / "data.parquet"
    if not data.exists():
        write_samples(data, generate(SyntheticConfig(), num=max(num_samples, 16), seed=0))
    return model, data


def describe(t: Trajectory) -> str:
    """One trajectory for people: both turns, the box, the tokens spent."""
    width, height = t.original_size
    full = budget_tokens(width, height, QWEN_DEFAULT_MAX_TOKENS) if width else 0
    return "\n".join(
        [
            f"{t.prompt_id} member {t.group_index} (weights v{t.weight_version})",
            f"  question: {t.sample.question}  options: {list(t.sample.options)}",
            f"  answer: {t.sample.answer}  gt_box: {t.sample.gt_box}",
            f"  stage 1: {t.stage1_text!r}",
            f"  box: {t.coarse_box} -> crop {t.crop_box} (fallback: {t.fallback})",
            f"  stage 2: {t.stage2_text!r}",
            f"  vision tokens: coarse {t.coarse_tokens} + crop {t.crop_tokens} ="
            f" {t.vision_tokens} vs {full} for the full image at Qwen's default cap",
            f"  policy tokens: {t.num_policy_tokens} of {len(t.token_ids)}"
            + (f"  FAILED: {t.failure}" if t.failure else ""),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub name (default: the tiny model)")
    parser.add_argument("--data", help="parquet dataset (default: synthetic samples)")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--budget", type=int, default=DEMO_COARSE_TOKENS, help="vision tokens")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(DEMO_DIR / "trajectories.parquet"))
    parser.add_argument("--address", default=None, help="Ray address (default: start locally)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model, data = args.model, args.data
    if model is None or data is None:
        demo_model, demo_data = ensure_demo_assets(DEMO_DIR.resolve(), args.num_samples)
        model, data = model or str(demo_model), data or str(demo_data)
    if Path(model).exists():  # actors do not share the driver's working directory
        model = str(Path(model).resolve())
    samples = list(itertools.islice(iter_samples(data), args.num_samples))
    config = RolloutConfig(
        engine=EngineConfig(model=str(model)),
        episode=EpisodeConfig(
            coarse_max_tokens=args.budget,
            crop_max_tokens=args.budget,
            group_size=args.group_size,
            max_new_tokens=args.max_new_tokens,
        ),
        pool=PoolConfig(min_workers=args.workers, max_workers=args.workers),
        resources=WorkerResources(num_cpus=0.5),
    )
    ray.init(address=args.address)
    pool = make_rollout_pool(config)
    pool.wait_ready()
    start = time.perf_counter()
    trajectories = pool.run(samples)
    seconds = time.perf_counter() - start
    print(describe(trajectories[0]))
    written = write_trajectories(args.out, trajectories)
    tokens = sum(t.num_policy_tokens for t in trajectories)
    print(
        f"{written} trajectories ({len(samples)} samples x G={args.group_size}) in {seconds:.1f} s"
        f", {tokens / seconds:.0f} policy tokens/s, written to {args.out}"
    )
    pool.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
