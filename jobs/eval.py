"""Evaluate a policy on a high-resolution benchmark: two-stage (ERGO) or single-stage (baseline).

    python -m jobs.eval [--config FILE.toml] --dataset vstar|hrbench|mmerwl|synthetic
        --data-root DIR --model PATH_OR_NAME --max-vision-tokens "[1280, 640]"
        [--modes '["two-stage", "single-stage"]'] [--prompts FILE.toml] [--FIELD VALUE ...]
        [--address auto]

Every field of `EvalConfig` is a `--field value` override of the TOML config (if any), read as
the train job reads its overrides (jobs/config.py); a list field also takes one value
(`--max-vision-tokens 1280`). `--tracking.experiment NAME` (or `--tracking.tracking-uri URI`)
logs to MLflow.

Every (mode, cap) pair is one run over the whole benchmark, on the same rollout workers (Ray
actors hosting vLLM engines; a local Ray unless `--address` names a cluster), greedy, one
answer per sample. `two-stage` is ERGO's episode with the coarse view at the cap (the crop at
`--crop-max-tokens`, default the same); `single-stage` is the baseline, the whole image at the
cap in one turn (16384, Qwen's default cap, is full resolution). Each turn decodes up to
`--max-new-tokens` (1024, as ERGO does). Writes to `out`: `report.json` (accuracy overall and per
category, on HR-Bench the cyclic scores, vision tokens, latency, fallback rate and failures, per
run), one parquet per run (each sample's prediction, box, tokens, latency) and
`accuracy_vs_tokens.png`; with `tracking`, logs them all to an MLflow run.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Self

import ray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from actors.actor_pool import PoolConfig
from actors.engine import EngineConfig
from actors.episode import EpisodeConfig, EpisodeMode
from actors.resources import WorkerResources
from actors.rollout_pool import RolloutPool
from actors.rollout_worker import RolloutWorker
from core.benchmarks import HRBenchVariant
from core.prompts import DEFAULT_PROMPTS, PromptsPath
from core.trajectory import Trajectory
from jobs.config import TrackingConfig, flatten, parse_job_args
from jobs.eval_data import EvalDataset, EvalRow, RowFailure, benchmark_name, count_rows, eval_rows
from jobs.eval_report import (
    EvalRecord,
    format_summary,
    plot_efficiency,
    record_from_trajectory,
    summarize,
    summary_metrics,
    write_records,
    write_report,
)
from rewards.answer import AccuracyConfig

logger = logging.getLogger(__name__)
TEXT_TOKENS = 1024  # room for both turns' prompt text in an engine sequence
PLOT_FILE, REPORT_FILE = "accuracy_vs_tokens.png", "report.json"


class EvalConfig(BaseModel):
    """One eval job: a benchmark, a model, and the (mode, cap) runs to compare."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: EvalDataset
    """Benchmark format: `vstar`, `hrbench`, `mmerwl`, or `synthetic` (our parquet samples)."""
    data_root: str
    """Folder holding the benchmark's files (synthetic: a parquet file or folder)."""
    hrbench_variant: HRBenchVariant = "4k"
    """HR-Bench's resolution: reads `hr_bench_4k.parquet` or `hr_bench_8k.parquet`."""
    model: str = Field(min_length=1)
    """Model folder or hub name."""
    modes: tuple[EpisodeMode, ...] = Field(("two-stage",), min_length=1)
    """Modes to run; each runs at every cap."""
    max_vision_tokens: tuple[Annotated[int, Field(ge=4)], ...] = Field((1280,), min_length=1)
    """Vision-token caps: two-stage's coarse view, single-stage's whole image."""
    crop_max_tokens: int | None = Field(None, ge=4)
    """Two-stage's crop cap; default: the run's cap."""
    max_new_tokens: int = Field(1024, ge=1)
    """Generation cap of each turn (ERGO decodes up to 1024 tokens). The engine's default
    sequence limit grows with it, within the model's positions."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N rows."""
    batch_size: int = Field(1, ge=1)
    """Samples per engine call. 1 measures each sample's own latency (as the paper reports
    it); larger batches are faster overall, and every member reports its batch's time."""
    workers: int = Field(1, ge=1)
    """Rollout workers (engines)."""
    resources: WorkerResources = WorkerResources()
    """Ray resources per worker (give each 1 GPU on clusters)."""
    dtype: str = "float32"
    """Engine dtype (`bfloat16` on GPUs)."""
    enforce_eager: bool = True
    """vLLM: run eagerly, without CUDA graphs (the engine starts sooner). `false` captures CUDA
    graphs while the engine starts and decodes faster on GPUs: use it when measuring latency."""
    cpu_threads: int | None = Field(None, ge=1)
    """CPU engines: torch threads (default: every core). On a busy machine 1 can be faster:
    a descheduled second thread stalls every decoding step."""
    max_model_len: int | None = Field(None, ge=256)
    """Engine sequence limit; default: the largest run's vision tokens + text + replies."""
    max_attempts: int = Field(2, ge=1)
    """Tries per batch (an engine error or a dead worker) before its samples count as failed."""
    prompts: PromptsPath = str(DEFAULT_PROMPTS)
    """Prompt templates TOML, e.g. a released checkpoint's own (two-stage uses its `system`,
    `coarse` and `fine` texts, single-stage its `verifier` text); checked at start."""
    accuracy: AccuracyConfig = AccuracyConfig()
    """How answers are read and compared (the training reward's rules)."""
    out: str = ""
    """Output folder for the report, the per-sample parquet files and the plot; default:
    `runs/eval/<benchmark>`."""
    plot_with: tuple[str, ...] = ()
    """Earlier `report.json` files whose runs join the plot."""
    tracking: TrackingConfig | None = None
    """Log to MLflow (default store: `<out>/mlflow.db`); None: no MLflow."""

    @field_validator("modes", "max_vision_tokens", "plot_with", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str | int) else value

    @model_validator(mode="after")
    def _default_out(self) -> Self:
        if not self.out:
            benchmark = benchmark_name(self.dataset, self.hrbench_variant)
            return self.model_copy(update={"out": f"runs/eval/{benchmark}"})
        return self

    def episodes(self) -> list[EpisodeConfig]:
        """One greedy episode config per (mode, cap) run, in order."""
        return [
            EpisodeConfig(
                mode=mode,
                coarse_max_tokens=cap,
                crop_max_tokens=self.crop_max_tokens or cap,
                group_size=1,
                max_new_tokens=self.max_new_tokens,
                temperature=0.0,
            )
            for mode, cap in itertools.product(self.modes, self.max_vision_tokens)
        ]

    def engine(self) -> EngineConfig:
        """The engine every worker hosts, long enough for the largest run (within what the
        model's position table allows; longer prompts then fail and are counted)."""
        length = self.max_model_len or required_model_len(self.episodes())
        limit = model_positions(self.model)
        if self.max_model_len is None and limit is not None and length > limit:
            logger.warning(
                "%s has %d positions, fewer than the %d these runs may need: prompts longer "
                "than that fail and count as wrong",
                self.model,
                limit,
                length,
            )
            length = limit
        return EngineConfig(
            model=self.model,
            dtype=self.dtype,
            max_model_len=length,
            cpu_threads=self.cpu_threads,
            enforce_eager=self.enforce_eager,
        )


def model_positions(model: str) -> int | None:
    """`max_position_embeddings` of a local model folder's text model (None: unknown)."""
    file = Path(model) / "config.json"
    if not file.is_file():
        return None
    config = json.loads(file.read_text())
    value = config.get("text_config", {}).get("max_position_embeddings")
    value = value or config.get("max_position_embeddings")
    return int(value) if value else None


def required_model_len(episodes: list[EpisodeConfig]) -> int:
    """Sequence length that holds every run: its images at their caps, prompt text and replies
    (single-stage: one image and one reply; two-stage: two of each), rounded up to 256."""
    need = 0
    for e in episodes:
        if e.mode == "single-stage":
            tokens = e.coarse_max_tokens + e.max_new_tokens
        else:
            tokens = e.coarse_max_tokens + e.crop_max_tokens + 2 * e.max_new_tokens
        need = max(need, tokens + TEXT_TOKENS)
    return -(-need // 256) * 256


def make_eval_pool(config: EvalConfig, engine: EngineConfig | None = None) -> RolloutPool:
    """`RolloutWorker` actors that run any mode at any cap on one engine each."""
    actor = ray.remote(RolloutWorker).options(**config.resources.actor_options())
    engine = engine or config.engine()
    first = config.episodes()[0]

    def factory() -> Any:
        return actor.remote(engine, config.prompts)

    pool = PoolConfig(
        min_workers=config.workers,
        max_workers=config.workers,
        chunk_size=config.batch_size,
        max_attempts=config.max_attempts,
    )
    return RolloutPool(factory, pool, config.resources.bundle(), first, name="eval")


def run_eval(pool: RolloutPool, config: EvalConfig) -> list[dict[str, Any]]:
    """Every run over the benchmark; writes the report, the parquet files and the plot."""
    out = Path(config.out)
    summaries = [_run(pool, config, episode, out) for episode in config.episodes()]
    write_report(out / REPORT_FILE, summaries)
    earlier = [
        run for path in config.plot_with for run in json.loads(Path(path).read_text())["runs"]
    ]
    plot_efficiency([*earlier, *summaries], out / PLOT_FILE)
    return summaries


def _run(
    pool: RolloutPool, config: EvalConfig, episode: EpisodeConfig, out: Path
) -> dict[str, Any]:
    """One (mode, cap) pass: streamed in windows that keep every worker busy."""
    benchmark = benchmark_name(config.dataset, config.hrbench_variant)
    total = count_rows(config.dataset, config.data_root, config.hrbench_variant)
    total = min(total, config.limit) if config.limit else total
    window = config.workers * pool.config.max_inflight_per_worker * config.batch_size
    records: list[EvalRecord] = []
    desc = f"{benchmark} {episode.mode} cap {episode.coarse_max_tokens}"
    # Runs share the engines: an image processed by an earlier run (the single-stage view is
    # the coarse view at the same cap) must not make this one look faster.
    pool.broadcast(lambda actor: actor.reset_caches.remote(), "reset_caches")
    start = time.perf_counter()
    with tqdm(total=total, desc=desc, unit="sample") as bar:
        for items in _windows(_items(config), window):
            records += _evaluate(pool, items, episode, config.accuracy)
            bar.update(len(items))
            bar.set_postfix(accuracy=f"{sum(r.correct for r in records) / len(records):.3f}")
    seconds = time.perf_counter() - start
    parquet = write_records(
        out / f"{benchmark}-{episode.mode}-{episode.coarse_max_tokens}.parquet", records
    )
    run = {
        "dataset": benchmark,
        "mode": episode.mode,
        "max_vision_tokens": episode.coarse_max_tokens,
        "crop_max_tokens": episode.crop_max_tokens if episode.mode == "two-stage" else None,
        "model": config.model,
        "max_new_tokens": episode.max_new_tokens,
        "batch_size": config.batch_size,
        "wall_s": seconds,
        "samples_per_s": len(records) / max(seconds, 1e-9),
        "parquet": parquet.name,
    }
    summary = summarize(records, run)
    print(format_summary(summary))
    return summary


def _items(config: EvalConfig) -> Iterator[EvalRow]:
    rows = eval_rows(config.dataset, config.data_root, config.hrbench_variant)
    return itertools.islice(rows, config.limit)


def _windows(rows: Iterator[EvalRow], size: int) -> Iterator[list[EvalRow]]:
    while window := list(itertools.islice(rows, size)):
        yield window


def _evaluate(
    pool: RolloutPool, rows: list[EvalRow], episode: EpisodeConfig, accuracy: AccuracyConfig
) -> list[EvalRecord]:
    """Records in row order: unreadable rows as failures, the rest through the workers."""
    ran = iter(pool.run([r.item for r in rows if not isinstance(r.item, RowFailure)], episode))
    return [_record(row, ran, accuracy) for row in rows]


def _record(row: EvalRow, ran: Iterator[Trajectory], accuracy: AccuracyConfig) -> EvalRecord:
    """The row's record (the next trajectory's, unless the row could not be read), carrying
    the groups the row is scored in."""
    item = row.item
    if isinstance(item, RowFailure):
        record = EvalRecord(item.id, item.category, item.answer, failure=item.reason)
    else:
        record = record_from_trajectory(next(ran), accuracy)
    return dataclasses.replace(record, question_group=row.question_group, cycle=row.cycle)


def log_to_mlflow(config: EvalConfig, summaries: list[dict[str, Any]]) -> str:
    """One MLflow run: the config as params, each run's metrics (step = its cap), the files."""
    from jobs.tracking import MLflowTracker

    assert config.tracking is not None
    out = Path(config.out)
    uri = config.tracking.tracking_uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    tracker = MLflowTracker(
        uri, config.tracking.experiment, out / "mlartifacts", run_name=config.tracking.run_name
    )
    tracker.log_params(flatten(config))
    for summary in summaries:
        tracker.log_metrics(summary_metrics(summary), step=summary["max_vision_tokens"])
    for name in (REPORT_FILE, PLOT_FILE, *(s["parquet"] for s in summaries)):
        tracker.log_artifact(out / name, "eval")
    tracker.end("FINISHED")
    return tracker.run_id


def parse_args(argv: list[str] | None = None) -> tuple[EvalConfig, str | None]:
    """The job's config (the TOML file, then `--field value` overrides) and the Ray address."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML file of EvalConfig fields (default: none)")
    p.add_argument("--address", help="Ray address (default: start a local Ray)")
    config, args = parse_job_args(EvalConfig, p, argv)
    return config, args.address


def main(argv: list[str] | None = None) -> None:
    config, address = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.model_dump_json(indent=2))
    ray.init(address=address)
    pool = make_eval_pool(config)
    try:
        pool.wait_ready()
        summaries = run_eval(pool, config)
    finally:
        pool.shutdown()
        ray.shutdown()
    if config.tracking is not None:
        print(f"MLflow run {log_to_mlflow(config, summaries)}")
    print(f"report: {out / REPORT_FILE}, plot: {out / PLOT_FILE}")


if __name__ == "__main__":
    main()
