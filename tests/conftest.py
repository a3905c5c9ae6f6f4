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


@pytest.fixture(scope="session")
def episode_trajectories(tiny_model_dir: Path) -> list:  # type: ignore[type-arg]
    """Real two-stage episodes of the tiny policy (transformers engine): 2 samples x G=2."""
    from transformers import AutoTokenizer

    from actors.chat_tokens import ChatTokens
    from actors.engine import EngineConfig
    from actors.episode import EpisodeConfig, EpisodeRunner
    from actors.hf_engine import HFEngine
    from core.prompts import PromptTemplates
    from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate

    engine = HFEngine(EngineConfig(backend="hf", model=str(tiny_model_dir)))
    runner = EpisodeRunner(
        ChatTokens(AutoTokenizer.from_pretrained(tiny_model_dir)),
        PromptTemplates.load(),
        EpisodeConfig(
            coarse_max_tokens=DEMO_COARSE_TOKENS,
            crop_max_tokens=DEMO_COARSE_TOKENS,
            group_size=2,
            max_new_tokens=12,
        ),
    )
    return runner.run(engine, list(generate(SyntheticConfig(), num=2, seed=5)))


@pytest.fixture(scope="session")
def train_rows(episode_trajectories: list) -> list:  # type: ignore[type-arg]
    """The episodes as learner rows, with advantages of both signs."""
    from learners.batch import TrainRow

    advantages = [1.0, -1.0, 0.5, -0.5]
    return [
        TrainRow.from_trajectory(t, a)
        for t, a in zip(episode_trajectories, advantages, strict=True)
    ]


# CI explores the same examples every run; locally hypothesis keeps searching for new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
