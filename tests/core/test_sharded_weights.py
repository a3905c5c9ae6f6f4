"""Assembling full tensors from learner ranks' shard rows (the `object_store` transport)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.sharded_weights import ParameterSpec, assemble, from_wire, to_wire

SPECS = (
    ParameterSpec("a.weight", torch.float32, (5, 2)),
    ParameterSpec("b.bias", torch.float32, (3,)),
)


def _full() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(10.0).reshape(5, 2), "b.bias": torch.tensor([7.0, 8.0, 9.0])}


def test_rows_from_every_rank_assemble_the_full_tensors() -> None:
    full = _full()
    # FSDP2's chunks of 5 rows over 2 ranks: 3 + 2; the bias is replicated, sent by rank 0 only
    rank0 = [(0, 0, to_wire(full["a.weight"][:3])), (1, 0, to_wire(full["b.bias"]))]
    rank1 = [(0, 3, to_wire(full["a.weight"][3:]))]
    assembled = dict(assemble(SPECS, [rank1, rank0]))  # any order of ranks
    assert list(assembled) == ["a.weight", "b.bias"]
    for name, tensor in full.items():
        assert torch.equal(assembled[name], tensor)


def test_missing_or_doubled_rows_are_an_error_naming_the_parameter() -> None:
    full = _full()
    partial = [(0, 0, to_wire(full["a.weight"][:3])), (1, 0, to_wire(full["b.bias"]))]
    with pytest.raises(ValueError, match=r"a\.weight: the ranks sent 3 rows of 5"):
        assemble(SPECS, [partial])
    with pytest.raises(ValueError, match=r"b\.bias: the ranks sent 6 rows of 3"):
        assemble(SPECS, [[*partial, (0, 3, to_wire(full["a.weight"][3:]))], partial[1:]])


def test_numpy_travels_where_numpy_has_the_dtype_and_bf16_stays_a_tensor() -> None:
    fp32 = torch.randn(4, 3)
    assert isinstance(to_wire(fp32), np.ndarray)
    assert torch.equal(from_wire(to_wire(fp32)), fp32)
    bf16 = fp32.to(torch.bfloat16)
    wire = to_wire(bf16)
    assert isinstance(wire, torch.Tensor) and torch.equal(from_wire(wire), bf16)
    spec = (ParameterSpec("w", torch.bfloat16, (4, 3)),)
    assert torch.equal(dict(assemble(spec, [[(0, 0, wire)]]))["w"], bf16)
