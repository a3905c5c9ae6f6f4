"""The driver's pure parts: its data (read by cursor), the step's training rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.dataset import write_samples
from core.sample import Sample
from core.stream import ShuffledParquet, SyntheticSource
from core.synthetic import SyntheticConfig, generate
from core.trajectory import Trajectory
from jobs.config import load_config
from jobs.train import busy_fractions, load_data, next_batch, training_rows, validation_episode
from rewards.registry import RewardResult

DEMO = Path(__file__).parents[2] / "configs" / "demo.toml"


def test_the_cursor_walks_seeded_epochs_of_synthetic_samples() -> None:
    small = ["--data.num_train", "5", "--data.num_val", "2"]
    config = load_config(DEMO, small)
    seeded = load_config(DEMO, [*small, "--train.seed", "1"])
    train, val = load_data(seeded)
    assert isinstance(train, SyntheticSource) and len(train) == 5 and len(val) == 2
    first, cursor = next_batch(train, 0, 3)
    second, cursor = next_batch(train, cursor, 3)
    assert cursor == 6
    epoch = [s.id for s in first + second[:2]]
    assert sorted(epoch) == sorted(f"synthetic-0-{i}" for i in range(5))  # each sample once
    # the order every run since the first has drawn: a seeded permutation per epoch
    assert epoch == [f"synthetic-0-{i}" for i in np.random.default_rng([1, 0]).permutation(5)]
    resumed, _ = load_data(seeded)
    again, _ = next_batch(resumed, 3, 3)
    assert [s.id for s in again] == [s.id for s in second]  # resuming at a cursor repeats it
    other, _ = next_batch(load_data(config)[0], 0, 3)
    assert [s.id for s in other] != [s.id for s in first]  # train.seed picks the order


def test_parquet_data_is_streamed_and_the_held_out_split_bounded(tmp_path: Path) -> None:
    [one] = generate(SyntheticConfig(), 1, 0)
    rows = [Sample(f"s{i}", one.image, "q?", (), "a") for i in range(20)]
    write_samples(tmp_path / "train.parquet", rows, batch_size=4)
    write_samples(tmp_path / "val.parquet", rows, batch_size=4)
    config = load_config(
        DEMO,
        [
            *("--data.source", "parquet", "--data.num_val", "4"),
            *("--data.train_path", str(tmp_path / "train.parquet")),
            *("--data.val_path", str(tmp_path / "val.parquet")),
            *("--data.shuffle_row_groups", "3", "--train.seed", "4"),
        ],
    )
    train, val = load_data(config)
    assert isinstance(train, ShuffledParquet) and train.window == 3 and len(train) == 20
    assert [s.id for s in val] == ["s0", "s5", "s10", "s15"]  # evenly spaced, not all 20
    drawn: list[list[str]] = []
    cursor = 0
    for _ in range(6):  # 48 samples: over two epoch boundaries
        batch, cursor = next_batch(train, cursor, 8)
        drawn.append([s.id for s in batch])
    first_epoch = [sample for batch in drawn for sample in batch][:20]
    assert sorted(first_epoch) == sorted(s.id for s in rows)
    resumed, _ = load_data(config)  # --resume at the checkpoint after step 3: cursor 24
    assert [[s.id for s in next_batch(resumed, c, 8)[0]] for c in (24, 32, 40)] == drawn[3:]
    assert train.decoded_groups <= 3


def test_training_rows_use_group_advantages_and_skip_failures() -> None:
    config = load_config(DEMO)
    [sample] = generate(SyntheticConfig(), 1, 0)
    ran = [Trajectory(sample, g, 0, token_ids=[1, 2, 3], loss_mask=[0, 1, 1]) for g in range(3)]
    failed = Trajectory(sample, 3, 0, failure="image: unreadable")
    results = [RewardResult({}, total) for total in (2.0, 0.0, 1.0, 0.0)]
    rows = training_rows([*ran, failed], results, group_size=4, config=config)
    assert len(rows) == 3  # the failed one has nothing to train on
    mean, std = 0.75, (((2 - 0.75) ** 2 + 0.75**2 + 0.25**2 + 0.75**2) / 3) ** 0.5  # sample std
    expected = [(r - mean) / (std + 1e-6) for r in (2.0, 0.0, 1.0)]
    assert [r.advantage for r in rows] == pytest.approx(expected)


def test_validation_is_greedy_once_per_sample_unless_told_otherwise() -> None:
    greedy = validation_episode(load_config(DEMO))
    assert greedy.temperature == 0.0 and greedy.group_size == 1
    sampled = validation_episode(load_config(DEMO, ["--train.val_temperature", "0.7"]))
    assert sampled.temperature == 0.7 and sampled.group_size == load_config(DEMO).episode.group_size
    assert greedy.coarse_max_tokens == load_config(DEMO).episode.coarse_max_tokens  # same budgets


def test_busy_fractions_share_the_step_among_the_roles() -> None:
    metrics = {"time/step": 2.0, "time/learn": 1.5, "time/verifier": 1.0}
    assert busy_fractions(metrics, produced_s=3.0, verifiers=2) == {
        "time/learner_busy_fraction": 0.75,
        "time/rollout_busy_fraction": 1.0,  # more than a step's work (ahead): capped
        "time/verifier_busy_fraction": 0.25,  # 1 s of engine time over 2 actors x 2 s
    }
    assert "time/verifier_busy_fraction" not in busy_fractions(metrics, 1.0, verifiers=0)
