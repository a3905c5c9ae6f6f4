"""Model weights in Ray's object store as each learner rank's own shard rows.

No rank gathers the model: every learner rank returns its rows of each parameter (FSDP2 shards
dim 0) into the object store on its own node, and a rollout worker fetches every rank's part
(Ray pulls them in parallel, once per node) and assembles full tensors. When the same version
also sits in a shared-memory file (`core.shared_weights`, transport `auto`), a worker on the
Ray node that wrote it maps the file instead (`ShardedWeights.for_this_node`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.shared_weights import SharedWeights

Named = list[tuple[str, torch.Tensor]]


@dataclass(frozen=True)
class ParameterSpec:
    """One full parameter: its checkpoint name, dtype and global shape."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ShardedWeights:
    """A version of the weights: one ObjectRef per learner rank, each holding that rank's
    `[(parameter index, first row, rows)]`, plus (transport `auto`) the same version in a
    shared-memory file on the learners' node. Cheap to send to actors."""

    version: int
    specs: tuple[ParameterSpec, ...]
    shards: tuple[Any, ...]
    shared: SharedWeights | None = None

    def for_this_node(self) -> SharedWeights | Named:
        """The file when it was written on this Ray node, else the tensors assembled from
        every rank's rows."""
        import ray

        here = ray.get_runtime_context().get_node_id()
        if self.shared is not None and self.shared.node_id == here:
            return self.shared
        return self.tensors()

    def tensors(self) -> Named:
        """Fetch every rank's rows from the object store and assemble the full tensors."""
        import ray

        return assemble(self.specs, ray.get(list(self.shards)))


def assemble(specs: Sequence[ParameterSpec], shards: Sequence[Sequence[tuple]]) -> Named:
    """Full tensors from the ranks' `(parameter index, first row, rows)`; every row of every
    parameter must come from exactly one rank (a clear error names the first that does not)."""
    full = [torch.empty(spec.shape, dtype=spec.dtype) for spec in specs]
    covered = [0] * len(specs)
    for shard in shards:
        for index, first, rows in shard:
            tensor = from_wire(rows)
            if full[index].dim() == 0:
                full[index].copy_(tensor)
                covered[index] += 1
            else:
                full[index][first : first + tensor.shape[0]] = tensor
                covered[index] += tensor.shape[0]
    for spec, rows in zip(specs, covered, strict=True):
        expected = spec.shape[0] if spec.shape else 1
        if rows != expected:
            raise ValueError(f"weights {spec.name}: the ranks sent {rows} rows of {expected}")
    return [(spec.name, tensor) for spec, tensor in zip(specs, full, strict=True)]


def to_wire(tensor: torch.Tensor) -> np.ndarray | torch.Tensor:
    """numpy travels zero-copy through Ray's object store; dtypes numpy lacks stay tensors."""
    tensor = tensor.detach().to("cpu")
    return tensor if tensor.dtype == torch.bfloat16 else tensor.contiguous().numpy()


def from_wire(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The tensor `to_wire` sent, without a copy. numpy out of the object store is read-only;
    the tensor is only ever read (copied into place or into an engine's parameters)."""
    if not isinstance(value, np.ndarray):
        return value
    with warnings.catch_warnings():  # torch warns about read-only arrays; nothing writes here
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(value)
