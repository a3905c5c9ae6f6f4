"""Vision pretraining: crops of landmarks labelled by their stripes, and a saved model whose
vision encoder changed while its language model did not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from core.drawing import ORIENTATIONS
from core.synthetic import SyntheticConfig, make_scene, sample_rng
from jobs.pretrain_vision import landmark_crops, pretrain


def test_crops_are_labelled_by_their_landmarks_orientation() -> None:
    config = SyntheticConfig(task="stripes")
    images, labels = landmark_crops(config, 3, 2, 64, np.random.default_rng(0))
    truth = [
        ORIENTATIONS.index(str(lm.orientation))
        for index in range(2)
        for lm in make_scene(config, sample_rng(3, index)).landmarks
    ]
    assert labels.tolist() == truth
    assert len(images) == 2 * config.landmarks
    assert all(28 * 28 * 40 <= im.width * im.height <= 28 * 28 * 64 for im in images)


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
