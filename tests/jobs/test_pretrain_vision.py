"""Vision pretraining: crops of landmarks labelled by their stripes, coarse views whose tokens
are labelled by their place in the grid, and a saved model whose vision encoder changed while
its language model did not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from core.drawing import ORIENTATIONS
from core.synthetic import SyntheticConfig, make_scene, sample_rng
from jobs.pretrain_vision import Probe, landmark_crops, pretrain


def test_crops_are_labelled_by_their_landmarks_orientation() -> None:
    config = SyntheticConfig(task="stripes")
    images, labels, views = landmark_crops(config, 3, 2, 64, np.random.default_rng(0))
    truth = [
        ORIENTATIONS.index(str(lm.orientation))
        for index in range(2)
        for lm in make_scene(config, sample_rng(3, index)).landmarks
    ]
    assert labels.tolist() == truth
    assert len(images) == 2 * config.landmarks
    assert all(28 * 28 * 40 <= im.width * im.height <= 28 * 28 * 64 for im in images)
    assert len(views) == 2 and all(v.size == (252, 168) for v in views)  # whole scenes, coarse


def test_every_merged_token_is_labelled_by_its_place(tiny_model_dir: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    probe = Probe(model, AutoProcessor.from_pretrained(tiny_model_dir), len(ORIENTATIONS))
    image = Image.new("RGB", (224, 168))  # 8 x 6 merged tokens
    guess, truth = probe.positions([image, image])
    assert guess.shape == truth.shape == (2 * 48, 2)
    grid = truth[:48].reshape(6, 8, 2)  # row-major, as the tokens come
    assert grid[0, 0].tolist() == [0, 0] and grid[-1, -1].tolist() == [1, 1]
    rows, columns = torch.linspace(0, 1, 6), torch.linspace(0, 1, 8)
    assert torch.allclose(grid[:, :, 0], rows[:, None].expand(6, 8))  # top to bottom
    assert torch.allclose(grid[:, :, 1], columns[None, :].expand(6, 8))  # left to right


def test_pretraining_changes_the_vision_encoder_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    accuracy = pretrain(
        str(tiny_model_dir), str(tmp_path), steps=2, batch=4, lr=1e-3, samples=2, seed=0,
        held_out=2,
    )  # fmt: skip
    assert accuracy * 8 == round(accuracy * 8)  # a share of the 8 held-out crops
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert changed and all("visual." in name for name in changed), sorted(changed)[:5]
