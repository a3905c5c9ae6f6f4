"""Failure records: every trajectory a sample owed is there, marked with the reason."""

from __future__ import annotations

from core.synthetic import SyntheticConfig, generate
from core.trajectory import failed_trajectories


def test_every_owed_trajectory_is_marked() -> None:
    samples = list(generate(SyntheticConfig(), 2, seed=0))
    records = failed_trajectories(samples, 3, 7, "engine dead")
    assert [(t.sample.id, t.group_index) for t in records] == [
        (s.id, g) for s in samples for g in range(3)
    ]
    assert all(t.failure == "engine dead" and t.weight_version == 7 for t in records)
