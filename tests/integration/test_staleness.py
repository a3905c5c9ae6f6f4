"""`train.max_staleness`: k = 0 is the synchronous loop, the same for the same seed; k = 1 trains
each step after the first on a batch rolled out with the weights of the step before, and never
on anything older; k = 2 runs further ahead and still trains nothing older than 2 versions.

Real Ray, the transformers engine (quick to start) for the policy and the verifier, one learner
rank, the tiny model; each run is the train job's `Trainer` in this process for 3 steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs.config import TrainConfig, load_config
from jobs.train import Trainer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
STEPS = 3
COMPARED = ("reward/total", "reward/format", "rollout/policy_tokens", "learner/loss")


def _config(model: Path, run_dir: Path, staleness: int, steps: int) -> TrainConfig:
    overrides = {
        "model": model,
        "train.run_dir": run_dir,
        "train.steps": steps,
        "train.max_staleness": staleness,
        "train.prompts_per_step": 2,
        "train.val_before_train": "false",
        "train.val_every": 100,
        "train.samples_every": 100,
        "train.checkpoint_every": 1,
        "data.num_train": 8,
        "data.num_val": 0,
        "learner.world_size": 1,
        "learner.grpo.tis_cap": 2.0,
        "rollout.engine.backend": "hf",
        "rollout.episode.group_size": 2,
        "rollout.episode.max_new_tokens": 16,
        "rewards.verifier.engine.backend": "hf",
    }
    pairs = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return load_config(ROOT / "configs" / "demo.toml", pairs)


def _train(
    model: Path, run_dir: Path, staleness: int, steps: int = STEPS, resume: bool = False
) -> dict[str, list[float]]:
    """Every metric's values by step, from the run's MLflow store."""
    trainer = Trainer(_config(model, run_dir, staleness, steps), run_dir)
    try:
        run_id = trainer.fit(resume=resume)
    finally:
        trainer.shutdown()
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    run = client.get_run(run_id)
    return {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
    }


@pytest.fixture(scope="module")
def runs(local_ray: None, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("staleness")
    return {
        name: _train(tiny_model_dir, folder / name, staleness, steps)
        for name, staleness, steps in (
            ("sync", 0, STEPS),
            ("sync_again", 0, STEPS),
            ("ahead", 1, STEPS),
            ("ahead2", 2, STEPS + 1),
        )
    }


def test_k0_is_the_same_for_the_same_seed(runs: dict) -> None:
    for key in COMPARED:
        assert runs["sync"][key] == runs["sync_again"][key], key
    assert runs["sync"]["train/staleness_max"] == [0.0] * STEPS


def test_k1_trains_one_version_behind_and_never_older(runs: dict) -> None:
    ahead, sync = runs["ahead"], runs["sync"]
    assert ahead["train/staleness_max"] == [0.0] + [1.0] * (STEPS - 1)
    assert ahead["train/staleness_mean"] == [0.0] + [1.0] * (STEPS - 1)
    assert ahead["train/too_stale"] == [0.0] * STEPS
    assert ahead["train/trained_rows"] == sync["train/trained_rows"] == [4.0] * STEPS
    assert ahead["rollout/off_version"] == [0.0] * STEPS
    for key in COMPARED:  # step 1 is the same batch on the same weights in both modes
        assert ahead[key][0] == sync[key][0], key
    assert ahead["learner/tis_weight_mean"][-1] > 0


def test_k2_runs_further_ahead_and_trains_nothing_older_than_2_versions(runs: dict) -> None:
    ahead = runs["ahead2"]
    steps = STEPS + 1
    assert all(lag <= 2 for lag in ahead["train/staleness_max"])
    assert max(ahead["train/staleness_max"]) >= 1  # batch 2 was rolled out before step 1 ended
    assert ahead["train/too_stale"] == [0.0] * steps
    assert ahead["train/trained_rows"] == [4.0] * steps
    histogram = [ahead[f"train/staleness_{lag}"] for lag in range(3)]
    assert [sum(counts) for counts in zip(*histogram, strict=True)] == [4.0] * steps
    assert ahead["train/staleness_0"][0] == 4.0


def test_k1_resumes_without_training_a_sample_twice_or_skipping_one(
    local_ray: None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Stopped after step 2 (its batch 3 rolled out ahead and never trained), then resumed: step
    3 rolls batch 3 out again with step 2's weights, so it trains fresh, and the data cursor
    ends where an uninterrupted run's does."""
    _train(tiny_model_dir, tmp_path, 1, steps=2)
    metrics = _train(tiny_model_dir, tmp_path, 1, steps=STEPS, resume=True)
    assert metrics["train/staleness_max"] == [0.0, 1.0, 0.0]  # each step logged once
    assert metrics["train/trained_rows"] == [4.0] * STEPS
    state = json.loads((tmp_path / "checkpoints" / f"step-{STEPS:06d}" / "state.json").read_text())
    assert state["extra"]["cursor"] == STEPS * 2  # prompts_per_step: every batch drawn once
