"""Trajectories with scripted replies: reward inputs without running a policy.

For tests and benchmarks of the reward side. Each sample gets `len(SCRIPTED_BOXES)` members
whose stage-1 boxes vary in size (the last is not a box, so it falls back) and whose answers
cycle through the option letters; crops come from the real original by `core.geometry.zoom`.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.geometry import parse_zoom, resize_to_budget, zoom
from core.sample import OPTION_LETTERS, Sample
from core.trajectory import Trajectory

SCRIPTED_BOXES = ("[0, 0, 30, 30]", "[10, 5, 60, 40]", "[0, 0, 90, 70]", "none")


def scripted_trajectories(samples: Iterable[Sample], max_tokens: int) -> list[Trajectory]:
    """`len(SCRIPTED_BOXES)` trajectories per sample; coarse view and crop within `max_tokens`."""
    out = []
    for sample in samples:
        original = sample.decode_image()
        coarse = resize_to_budget(original, max_tokens)
        for g, box in enumerate(SCRIPTED_BOXES):
            stage1 = f"<think>look</think><zoom>{box}</zoom>"
            view = zoom(original, coarse.size, parse_zoom(stage1), max_tokens)
            letter = OPTION_LETTERS[g % max(1, len(sample.options))]
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
