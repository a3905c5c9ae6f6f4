"""Roll out two-stage trajectories with a pool of Ray actors hosting vLLM engines.

    python -m jobs.rollout [--config FILE.toml] [--model PATH] [--data PARQUET]
        [--num-samples N] [--episode.group_size G] [--pool.max_workers N] [--FIELD VALUE ...]
        [--out trajectories.parquet] [--address auto]

Every field of `RolloutJobConfig` is a `--field value` override, loaded as every job loads its
config (jobs/config.py). With no arguments it is the embedded demo: the tiny random-weight
model and synthetic 2048x1536 samples are built under `runs/demo/` (once), a local Ray starts,
one worker hosts a vLLM CPU engine, and a batch of samples becomes `samples x G` trajectories:
written to parquet and one printed. A random model writes gibberish, so boxes fall back; the
pipeline is the real one.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig, RolloutPool
from actors.rollout_worker import RolloutWorker
from core.dataset import iter_samples, write_samples
from core.geometry import QWEN_DEFAULT_MAX_TOKENS, budget_tokens
from core.prompts import DEFAULT_PROMPTS, PromptsPath
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
    prompts: PromptsPath = str(DEFAULT_PROMPTS)
    """Prompt templates TOML."""


def make_rollout_pool(config: RolloutConfig, verifiers: list[Any] | None = None) -> RolloutPool:
    """Wrap `RolloutWorker` as a Ray actor with the configured resources and start the pool;
    its workers send `verifiers` (actor handles) their queries as soon as crops exist."""
    actor = ray.remote(RolloutWorker).options(**config.resources.actor_options())

    def factory() -> Any:
        return actor.remote(config.engine, config.prompts, verifiers)

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


class RolloutJobConfig(RolloutConfig):
    """The rollout job: a rollout pool (`RolloutConfig`) and what it runs on."""

    model: str = ""
    """Model folder or hub name; default: the tiny demo model (built once under runs/demo)."""
    data: str = ""
    """Parquet dataset; default: synthetic demo samples (built once under runs/demo)."""
    num_samples: int = Field(4, ge=1)
    """Samples to roll out (each `episode.group_size` times)."""
    out: str = str(DEMO_DIR / "trajectories.parquet")
    """Parquet file the trajectories are written to."""
    episode: EpisodeConfig = EpisodeConfig(
        coarse_max_tokens=DEMO_COARSE_TOKENS,
        crop_max_tokens=DEMO_COARSE_TOKENS,
        group_size=4,
        max_new_tokens=48,
    )
    resources: WorkerResources = WorkerResources(num_cpus=0.5)
    engine: EngineConfig = EngineConfig(model="(the top-level model)")
    """The engine each worker hosts; its `model` is the top-level one."""

    @model_validator(mode="before")
    @classmethod
    def _engine_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("model"):
            engine = data.get("engine", {})
            engine = engine.model_dump() if isinstance(engine, BaseModel) else dict(engine)
            data = {**data, "engine": {**engine, "model": data["model"]}}
        return data


def main(argv: list[str] | None = None) -> None:
    from jobs.config import parse_job_args  # jobs.config composes this module's RolloutConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML file of RolloutJobConfig fields (default: none)")
    parser.add_argument("--address", default=None, help="Ray address (default: start locally)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, args = parse_job_args(RolloutJobConfig, parser, argv)
    if not config.model or not config.data:
        demo_model, demo_data = ensure_demo_assets(DEMO_DIR.resolve(), config.num_samples)
        update = {"model": config.model or str(demo_model), "data": config.data or str(demo_data)}
        config = RolloutJobConfig.model_validate({**config.model_dump(), **update})
    samples = list(itertools.islice(iter_samples(config.data), config.num_samples))
    ray.init(address=args.address)
    pool = make_rollout_pool(config)
    pool.wait_ready()
    start = time.perf_counter()
    trajectories = pool.run(samples)
    seconds = time.perf_counter() - start
    print(describe(trajectories[0]))
    written = write_trajectories(config.out, trajectories)
    tokens = sum(t.num_policy_tokens for t in trajectories)
    print(
        f"{written} trajectories ({len(samples)} samples x G={config.episode.group_size}) in "
        f"{seconds:.1f} s, {tokens / seconds:.0f} policy tokens/s, written to {config.out}"
    )
    pool.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
