"""Train a coarse-to-fine policy with GRPO: the single-controller driver loop.

    python -m jobs.train --config configs/demo.toml [--resume] [--address auto] [--a.b value ...]

Each step reads top to bottom: take a batch of samples (read on demand from a seeded shuffle,
`core.stream`), roll out G two-stage trajectories per sample (rollout pool; each worker sends
the verifier its crops before stage 2) and score each chunk as soon as it is rolled out
(reward pool), compute group advantages and update the policy (learner group), send the new
weights to every rollout worker, release rollout and reward actors idle past their pool's
`idle_timeout_s`, log to MLflow (pool sizes, node count, replaced and retried actors included),
and every K steps validate, log sample trajectories and checkpoint. With `train.max_staleness =
k >= 1` the batches come from a driver thread that runs up to k weight versions ahead of the
learner (`jobs.producer`). `--resume` continues the latest checkpoint (its data cursor
included) in the same MLflow run. Under `ray job submit` it joins the cluster; otherwise it
starts a local Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from actors.episode import EpisodeConfig
from core.sample import Sample
from core.stream import SampleSource, ShuffledParquet, SyntheticSource, spread_samples
from core.synthetic import generate
from core.trajectory import Trajectory
from jobs.config import TrainConfig, flatten, parse_job_args
from jobs.learner import make_learner_group
from jobs.producer import Produced, Producer, StreamScorer
from jobs.reporting import plot_curves, rollout_metrics, write_samples
from jobs.rewards import make_reward_pool, make_verifiers
from jobs.rollout import make_rollout_pool
from jobs.tracking import MLflowTracker
from learners.batch import TrainRow
from learners.grpo import group_advantages
from rewards.registry import RewardResult, reward_metrics

logger = logging.getLogger(__name__)
CURVES = (
    "reward/total",
    "reward/accuracy",
    "reward/region",
    "reward/box",
    "val/accuracy",
    "val/region",
    "val/iou",
)
POOL_CURVES = (  # capacity and faults: `pool_curves.png`
    "pool/size",
    "pool/replaced",
    "pool/retried",
    "reward_pool/size",
    "reward_pool/replaced",
    "cluster/nodes",
)


class Trainer:
    """Owns the three actor groups and runs the loop."""

    def __init__(self, config: TrainConfig, run_dir: Path) -> None:
        self.config, self.run_dir = config, run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
        self.train_data, self.val_samples = load_data(config)
        self.verifiers = make_verifiers(config.rewards)
        early = self.verifiers if "region" in config.rewards.weights else None
        self.rollout = make_rollout_pool(config.rollout, early)
        self.rewards = make_reward_pool(config.rewards, self.verifiers)
        learner = config.learner
        self.learner = make_learner_group(
            learner,
            learner.world_size,
            learner.resources,
            learner.weight_transport,
            learner.timeout_s,
        )
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def fit(self, resume: bool) -> str:
        """Run every remaining step; returns the MLflow run id."""
        cfg = self.config.train
        step, cursor, run_id = 0, 0, None
        if resume:
            step, cursor, run_id = self._resume()
        tracker = self._tracker(run_id)
        self.rollout.wait_ready()
        self.rewards.wait_ready()
        bar = tqdm(range(step + 1, cfg.steps + 1), initial=step, total=cfg.steps, desc="train")
        producer = Producer(
            self._produce,
            lambda: self.rollout.version,
            step + 1,
            cfg.steps,
            cursor,
            cfg.max_staleness,
        )
        try:
            if step == 0 and cfg.val_before_train:  # the baseline every later point compares with
                self._log(tracker, self.validate(), 0)
            for step in bar:
                started, busy = time.perf_counter(), producer.busy_s
                produced = producer.next()
                metrics = self._learn(produced, step, producer, time.perf_counter() - started)
                metrics["time/step"] = time.perf_counter() - started
                metrics.update(busy_fractions(metrics, producer.busy_s - busy, len(self.verifiers)))
                if step % cfg.val_every == 0 or step == cfg.steps:
                    metrics.update(self.validate())
                self._log(tracker, metrics, step)
                if step % cfg.samples_every == 0:
                    self._log_samples(tracker, step, produced.trajectories, produced.results)
                bar.set_postfix(_postfix(metrics, self.history))
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self._checkpoint(step, produced.cursor, tracker.run_id)
            self._finish(tracker)
        except BaseException:
            tracker.end("KILLED")
            raise
        finally:
            producer.stop()
        return tracker.run_id

    def _produce(self, cursor: int) -> Produced:
        """Roll out the batch at `cursor` with the weights the workers were sent last, scoring
        each chunk as soon as it is rolled out."""
        batch, cursor = next_batch(self.train_data, cursor, self.config.train.prompts_per_step)
        start = time.perf_counter()
        version = self.rollout.version
        with StreamScorer(self.rewards) as scorer:
            trajectories = self.rollout.run(batch, on_result=scorer.add)
            rolled = time.perf_counter()
        results = scorer.results()
        times = {"time/rollout": rolled - start, "time/reward": time.perf_counter() - rolled}
        return Produced(trajectories, results, version, times, cursor)

    def _learn(
        self, produced: Produced, step: int, producer: Producer, waited: float
    ) -> dict[str, float]:
        """Train on a produced batch, then send the new weights to every worker (with
        `max_staleness` >= 1 without waiting: a worker loads them after the chunks it holds)
        and release idle actors; returns the step's metrics. `waited`: the time the learner
        waited for the batch."""
        start = time.perf_counter()
        trajectories, results = produced.trajectories, produced.results
        k = self.config.train.max_staleness
        staleness = [step - 1 - t.weight_version for t in trajectories]  # learner: step - 1
        fresh = [lag <= k for lag in staleness]
        group_size = self.config.episode.group_size
        rows = training_rows(trajectories, results, group_size, self.config, fresh)
        learned = self.learner.step(rows) if rows else {}
        learned_at = time.perf_counter()
        self.rollout.settle()  # the last version is loaded everywhere: its file may be reused
        weights = self.learner.export_weights(step)
        self.rollout.publish_weights(step, weights, wait=k == 0)
        producer.sent()
        self.rollout.scale_down_idle()
        self.rewards.scale_down_idle()
        lags = Counter(staleness)
        return {
            **rollout_metrics(trajectories, produced.times["time/rollout"]),
            "rollout/off_version": float(
                sum(t.weight_version != produced.version for t in trajectories)
            ),
            "cluster/nodes": float(sum(node["Alive"] for node in ray.nodes())),
            **reward_metrics(results),
            **learned,
            **self.rollout.metrics,
            **self.rewards.metrics,
            "train/trained_rows": float(len(rows)),
            "train/staleness_mean": sum(staleness) / max(1, len(staleness)),
            "train/staleness_max": float(max(staleness, default=0)),
            **{f"train/staleness_{lag}": float(lags[lag]) for lag in range(k + 1)},
            "train/too_stale": float(fresh.count(False)),
            **produced.times,
            "time/wait_rollout": waited,
            "time/learn": learned_at - start,
            "time/sync": time.perf_counter() - learned_at,
        }

    def validate(self) -> dict[str, float]:
        """Accuracy, region score and vision tokens on the held-out split
        (`train.val_temperature`: greedy, one episode each, by default)."""
        if not self.val_samples:
            return {}
        trajectories = self.rollout.run(self.val_samples, validation_episode(self.config))
        scored = reward_metrics(self.rewards.score(trajectories))
        stats = rollout_metrics(trajectories, 1.0)
        return {
            "val/accuracy": scored.get("reward/accuracy", 0.0),
            "val/region": scored.get("reward/region", 0.0),
            "val/iou": scored.get("reward/iou", 0.0),
            "val/reward": scored["reward/total"],
            "val/vision_tokens": stats["rollout/vision_tokens_total"],
            "val/fallback_rate": stats["rollout/fallback_rate"],
            "val/box_area_ratio": stats["rollout/box_area_ratio"],
        }

    def shutdown(self) -> None:
        self.rollout.shutdown()  # a batch being rolled out ahead ends here
        self.rewards.shutdown()
        self.learner.shutdown()

    def _tracker(self, run_id: str | None) -> MLflowTracker:
        cfg = self.config.tracking
        uri = cfg.tracking_uri or f"sqlite:///{self.run_dir / 'mlflow.db'}"
        tracker = MLflowTracker(
            uri, cfg.experiment, self.run_dir / "mlartifacts", run_id, cfg.run_name
        )
        if run_id is None:
            tracker.log_params(flatten(self.config))
            tracker.log_artifact(self.run_dir / "config.json", "config")
        return tracker

    def _log(self, tracker: MLflowTracker, metrics: dict[str, float], step: int) -> None:
        tracker.log_metrics(metrics, step)
        for name in CURVES + POOL_CURVES:
            if name in metrics:
                self.history[name].append((step, metrics[name]))

    def _log_samples(
        self,
        tracker: MLflowTracker,
        step: int,
        trajectories: list[Trajectory],
        results: list[RewardResult],
    ) -> None:
        name = f"samples/step-{step:06d}"
        folder = write_samples(self.run_dir / name, trajectories, results, count=8)
        tracker.log_artifact(folder, name)

    def _checkpoint(self, step: int, cursor: int, run_id: str) -> None:
        path = self.run_dir / "checkpoints" / f"step-{step:06d}"
        self.learner.save(path, {"step": step, "cursor": cursor, "run_id": run_id})
        latest = self.run_dir / "checkpoints" / "latest.json"
        tmp = latest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": str(path), "step": step}))
        tmp.replace(latest)  # atomic: a kill leaves the previous pointer intact

    def _resume(self) -> tuple[int, int, str | None]:
        latest = self.run_dir / "checkpoints" / "latest.json"
        if not latest.exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {latest.parent}")
        extra = self.learner.load(Path(json.loads(latest.read_text())["path"]))
        step = int(extra["step"])
        self.rollout.publish_weights(step, self.learner.export_weights(step))
        logger.info("resumed at step %d (data cursor %d)", step, extra["cursor"])
        return step, int(extra["cursor"]), extra.get("run_id")

    def _finish(self, tracker: MLflowTracker) -> None:
        final = self.run_dir / "final"
        self.learner.export_hf(final)
        tracker.log_artifact(final, "final")
        for names, file in ((CURVES, "reward_curves.png"), (POOL_CURVES, "pool_curves.png")):
            curves = {name: self.history[name] for name in names if name in self.history}
            if curves:
                tracker.log_artifact(plot_curves(curves, self.run_dir / file), "plots")
        tracker.end("FINISHED")


def training_rows(
    trajectories: Sequence[Trajectory],
    results: Sequence[RewardResult],
    group_size: int,
    config: TrainConfig,
    fresh: Sequence[bool] | None = None,
) -> list[TrainRow]:
    """GRPO advantages per group (failed rollouts count as reward 0 in their group, then are
    left out: they have no tokens to train on; so are those not `fresh`, too stale to train)."""
    grpo = config.learner.grpo
    rewards = torch.tensor([r.total for r in results], dtype=torch.float64)
    groups = torch.arange(len(trajectories)) // group_size
    advantages = group_advantages(rewards, groups, grpo.advantage_std, grpo.std_eps)
    fresh = fresh if fresh is not None else [True] * len(trajectories)
    return [
        TrainRow.from_trajectory(t, float(a))
        for t, a, ok in zip(trajectories, advantages, fresh, strict=True)
        if ok and t.failure is None and t.token_ids
    ]


def next_batch(data: SampleSource, cursor: int, size: int) -> tuple[list[Sample], int]:
    """`size` samples from `cursor` (samples drawn so far, which checkpoints store); returns them
    and the new cursor. What a position draws depends on the seed and the position alone."""
    batch = data.batch(cursor, size)
    return batch, cursor + len(batch)


def validation_episode(config: TrainConfig) -> EpisodeConfig:
    """The training episode at `train.val_temperature`; greedy runs one episode per sample."""
    temperature = config.train.val_temperature
    group_size = config.episode.group_size if temperature > 0 else 1
    return config.episode.model_copy(update={"temperature": temperature, "group_size": group_size})


def load_data(config: TrainConfig) -> tuple[SampleSource, list[Sample]]:
    """The training source (read on demand, shuffled by `train.seed`) and the held-out samples
    (at most `data.num_val`, held in memory)."""
    data, seed = config.data, config.train.seed
    train: SampleSource
    if data.source == "parquet":
        assert data.train_path is not None
        train = ShuffledParquet(data.train_path, seed, window=data.shuffle_row_groups)
        val = spread_samples(data.val_path, data.num_val) if data.val_path else []
    else:
        train = SyntheticSource(data.synthetic, data.num_train, data.seed, seed)
        val = list(generate(data.synthetic, num=data.num_val, seed=data.seed + 1_000_003))
    logger.info("data: %d training samples per epoch, %d held out", len(train), len(val))
    return train, val


def busy_fractions(
    metrics: dict[str, float], produced_s: float, verifiers: int
) -> dict[str, float]:
    """The share of the step each role worked (its idle share is the rest): the learner
    training, the rollout side (rollout and scoring, on the driver or its thread) producing,
    and the verifier actors' engines answering (for the batch trained; if there are any)."""
    step = metrics["time/step"]
    busy = {
        "time/learner_busy_fraction": metrics["time/learn"] / step,
        "time/rollout_busy_fraction": min(1.0, produced_s / step),
    }
    if verifiers and "time/verifier" in metrics:
        busy["time/verifier_busy_fraction"] = min(1.0, metrics["time/verifier"] / step / verifiers)
    return busy


def _postfix(
    metrics: dict[str, float], history: dict[str, list[tuple[int, float]]]
) -> dict[str, str]:
    """The step's reward and phase times, and the latest validation accuracy with its step."""
    keys = ("reward/total", "time/rollout", "time/reward", "time/learn", "time/sync")
    shown = {k.split("/")[1]: f"{metrics[k]:.2f}" for k in keys if k in metrics}
    if history.get("val/accuracy"):
        step, accuracy = history["val/accuracy"][-1]
        shown["val_acc"] = f"{accuracy:.2f}@{step}"
    return shown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--resume", action="store_true", help="continue the latest checkpoint")
    parser.add_argument("--address", default=None, help="Ray address (default: auto or local)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, args = parse_job_args(TrainConfig, parser, argv)
    ray.init(address=args.address)
    trainer = Trainer(config, Path(config.train.run_dir).resolve())
    try:
        run_id = trainer.fit(args.resume)
    finally:
        trainer.shutdown()
    print(f"finished: MLflow run {run_id}, final weights in {trainer.run_dir / 'final'}")


if __name__ == "__main__":
    main()
