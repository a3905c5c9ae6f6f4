"""Shared-memory weights files for tests: written as the learner ranks write them."""

from __future__ import annotations

from pathlib import Path

import torch

from core.shared_weights import SharedWeights, create, layout, map_for_writing, place_of_rows


def fill(path: Path, weights: dict[str, torch.Tensor], world: int = 1) -> SharedWeights:
    """Write every tensor as `world` ranks would (each its chunk of rows, like FSDP2) into a
    new file at `path`; returns its handle (version 0)."""
    specs = layout([(n, t.dtype, tuple(t.shape)) for n, t in weights.items()])
    data_start = create(path, specs)
    mapped = map_for_writing(path)
    for spec, tensor in zip(specs, weights.values(), strict=True):
        rows = 0
        for chunk in torch.chunk(tensor, world):
            place_of_rows(mapped, data_start, spec, rows, chunk).copy_(chunk)
            rows += chunk.shape[0]
    return SharedWeights(str(path), "this-node", 0)
