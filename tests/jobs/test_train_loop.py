"""The driver's pure parts: the data cursor and the step's training rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.synthetic import SyntheticConfig, generate
from core.trajectory import Trajectory
from jobs.config import load_config
from jobs.train import next_batch, training_rows, validation_episode
from rewards.registry import RewardResult

DEMO = Path(__file__).parents[2] / "configs" / "demo.toml"


def test_the_cursor_walks_seeded_epochs() -> None:
    [one] = generate(SyntheticConfig(), 1, 0)
    samples = [dataclasses.replace(one, id=f"s{i}") for i in range(5)]
    first, cursor = next_batch(samples, 0, 3, seed=1)
    second, cursor = next_batch(samples, cursor, 3, seed=1)
    assert cursor == 6
    epoch = [s.id for s in first + second[:2]]
    assert sorted(epoch) == [f"s{i}" for i in range(5)]  # one epoch: each sample once
    again, _ = next_batch(samples, 3, 3, seed=1)
    assert [s.id for s in again] == [s.id for s in second]  # resuming at a cursor repeats it
    other, _ = next_batch(samples, 0, 3, seed=2)
    assert [s.id for s in other] != [s.id for s in first]  # the seed picks the order


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
