"""Scripted trajectories: what reward tests and benchmarks score."""

from core.geometry import vision_tokens
from core.scripted import SCRIPTED_BOXES, scripted_trajectories
from core.synthetic import SyntheticConfig, generate


def test_scripted_trajectories_crop_the_original() -> None:
    samples = list(generate(SyntheticConfig(), num=2, seed=0))
    out = scripted_trajectories(samples, max_tokens=64)
    assert len(out) == 2 * len(SCRIPTED_BOXES)
    assert [t.group_index for t in out[:4]] == [0, 1, 2, 3]
    assert [t.fallback for t in out[:4]] == [None, None, None, "malformed"]
    for t in out:
        width, height = t.original_size
        assert t.crop_box is not None
        x1, y1, x2, y2 = t.crop_box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert all(vision_tokens(*image.size) <= 64 for image in t.images)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (t.crop_box for t in out[:3]) if b]
    assert areas == sorted(areas)  # the scripted boxes grow
