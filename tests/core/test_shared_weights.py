"""The shared-memory weights file: a valid safetensors file, filled row range by row range."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from weight_files import fill

from core.shared_weights import (
    SharedWeights,
    create,
    layout,
    map_for_writing,
    place_of_rows,
    read_layout,
)


@pytest.fixture
def weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed_tokens.weight": torch.randn(7, 4, generator=g),  # 7 rows: uneven shards
        "model.norm.weight": torch.randn(4, generator=g),
        "visual.merger.mlp.0.bias": torch.randn(3, generator=g),
    }


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rows_written_by_every_rank_make_a_safetensors_file(
    weights: dict[str, torch.Tensor], world: int, tmp_path: Path
) -> None:
    path = tmp_path / "w.safetensors"
    fill(path, weights, world)
    loaded = load_file(path)  # any safetensors reader accepts the file
    assert set(loaded) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor)
    shared = SharedWeights(str(path), "node", 3)
    views = dict(shared.tensors())
    assert list(views) == list(weights)  # layout order
    assert all(torch.equal(views[n], weights[n]) for n in weights)


def test_views_do_not_copy_and_data_starts_aligned(
    weights: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "w.safetensors"
    fill(path, weights, 2)
    data_start, _ = read_layout(path)
    assert data_start % 64 == 0
    first, second = (dict(SharedWeights(str(path), "n", 0).tensors()) for _ in range(2))
    name = "model.norm.weight"
    # MAP_PRIVATE views of the same file: a write in one reader is not seen by another
    first[name][0] = 123.0
    assert second[name][0] == weights[name][0]


def test_rows_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    specs = layout([("a", torch.float32, (4, 2))])
    data_start = create(path, specs)
    mapped = map_for_writing(path)
    with pytest.raises(ValueError, match="a: rows 3"):
        place_of_rows(mapped, data_start, specs[0], 3, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="do not fit"):
        place_of_rows(mapped, data_start, specs[0], 0, torch.zeros(1, 2, dtype=torch.float64))


def test_misaligned_mixed_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="b: offset 6 is not aligned"):
        layout([("a", torch.bfloat16, (3,)), ("b", torch.float32, (2,))])


def test_a_file_on_another_node_says_which_transport_to_use(tmp_path: Path) -> None:
    shared = SharedWeights(str(tmp_path / "gone.safetensors"), "node-7", 4)
    with pytest.raises(FileNotFoundError, match=r"node-7.*object_store"):
        next(shared.tensors())
