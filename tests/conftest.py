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
    """Trajectories of 3 synthetic samples x 4 with scripted replies: varied boxes (one falls
    back) and answers, cropped from the real originals by `core.geometry.zoom`."""
    from core.geometry import parse_zoom, resize_to_budget, zoom
    from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
    from core.trajectory import Trajectory

    boxes = ["[0, 0, 30, 30]", "[10, 5, 60, 40]", "[0, 0, 90, 70]", "none"]
    out = []
    for sample in generate(SyntheticConfig(), num=3, seed=3):
        original = sample.decode_image()
        coarse = resize_to_budget(original, DEMO_COARSE_TOKENS)
        for g, (box, letter) in enumerate(zip(boxes, "ABCD", strict=True)):
            stage1 = f"<think>look</think><zoom>{box}</zoom>"
            view = zoom(original, coarse.size, parse_zoom(stage1), DEMO_COARSE_TOKENS)
            out.append(
                Trajectory(
                    sample,
                    g,
                    weight_version=0,
                    images=[coarse, view.image],
                    stage1_text=stage1,
                    stage2_text=f"<think>seen</think><answer>{letter}</answer>",
                    crop_box=view.box,
                    fallback=view.fallback,
                    original_size=original.size,
                )
            )
    return out


# CI explores the same examples every run; locally hypothesis keeps searching for new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
