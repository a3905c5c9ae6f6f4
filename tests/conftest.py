"""Shared fixtures: the tiny model is built once per test session, never downloaded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jobs.make_tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A real local Ray for one test module (2 CPUs, as this machine has)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def scripted_trajectories() -> list:  # type: ignore[type-arg]
    """3 synthetic samples x 4 scripted replies (varied boxes, one fallback; varied answers)."""
    from core.scripted import scripted_trajectories
    from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate

    return scripted_trajectories(generate(SyntheticConfig(), num=3, seed=3), DEMO_COARSE_TOKENS)


# CI explores the same examples every run; locally hypothesis keeps searching for new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
