"""Weights out of a sharded learner, for the rollout engines.

Two transports, one per `LearnerGroupConfig.weight_transport`:
- `shm` (learners and rollout workers on one node): rank 0 lays out a safetensors file in
  shared memory (`core.shared_weights`) and every rank copies its own FSDP2 shard rows into
  place. Nothing is gathered, pickled or copied twice; rollout workers map the file.
- `object_store` (any placement): every parameter is gathered to rank 0, which returns the
  full fp32 arrays into Ray's object store for the workers to fetch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.distributed.tensor import DTensor, Shard

from core.shared_weights import (
    TensorSpec,
    create,
    layout,
    map_for_writing,
    place_of_rows,
)
from core.shm_files import new_file
from core.weight_names import to_checkpoint_name

WeightTransport = Literal["shm", "object_store"]


def checkpoint_parameters(policy: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The parameters under the names a checkpoint on disk gives them, in module order: an
    `lm_head.weight` tied to the embeddings is left out, as checkpoints leave it out."""
    tied = bool(getattr(getattr(policy, "config", None), "tie_word_embeddings", False))
    named = ((to_checkpoint_name(name), p) for name, p in policy.named_parameters())
    return [(name, p) for name, p in named if not (tied and name == "lm_head.weight")]


def weight_specs(policy: torch.nn.Module) -> list[TensorSpec]:
    """The layout of the full parameters (global shapes, checkpoint names), in module order."""
    return layout([(name, p.dtype, tuple(p.shape)) for name, p in checkpoint_parameters(policy)])


def create_shared(policy: torch.nn.Module) -> tuple[str, int]:
    """A new, empty shared-memory weights file laid out for `policy`: (path, data start)."""
    path = new_file()
    return str(path), create(path, weight_specs(policy))


CopyPlan = list[tuple[torch.Tensor, torch.Tensor]]  # (place in the mapped file, source rows)


@torch.no_grad()
def copy_plan(policy: torch.nn.Module, path: str, data_start: int, rank: int) -> CopyPlan:
    """Where each of this rank's shard rows goes in the shared file. Built once per file: the
    sources are the live local shards (the optimizer updates them in place) and the places
    are views of one lasting mapping, so each export is only the copies."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"shared weights file {path} is on another node than learner rank {rank}: "
            "with learner ranks on several nodes set learner.weight_transport = 'object_store'"
        )
    mapped, plan = map_for_writing(Path(path)), []
    for spec, (_, param) in zip(weight_specs(policy), checkpoint_parameters(policy), strict=True):
        row, local = shard_rows(param.detach(), rank)
        if local is not None and local.numel():
            plan.append((place_of_rows(mapped, data_start, spec, row, local), local))
    return plan


@torch.no_grad()
def write_shards(plan: CopyPlan) -> None:
    """Copy this rank's current shard rows into the shared file."""
    for place, local in plan:
        place.copy_(local)


def shard_rows(param: torch.Tensor, rank: int) -> tuple[int, torch.Tensor | None]:
    """(first row, local rows) of this rank's part of `param`. FSDP2 shards dim 0 as
    `torch.chunk` does: ceil(n / world) rows per rank, the last ranks shorter or empty.
    Replicated or plain tensors are written by rank 0 alone."""
    if not isinstance(param, DTensor):
        return 0, param if rank == 0 else None
    (placement,) = param.placements  # FSDP2: a 1-D mesh
    local = param.to_local()
    if placement.is_replicate():
        return 0, local if rank == 0 else None
    if not (isinstance(placement, Shard) and placement.dim == 0):
        raise ValueError(f"cannot export a parameter placed as {placement} (FSDP2 shards dim 0)")
    world, rows = param.device_mesh.size(), param.shape[0]
    first = min(rank * math.ceil(rows / world), rows)
    expected = max(0, min(math.ceil(rows / world), rows - first))
    if local.shape[0] != expected:
        raise ValueError(f"rank {rank}: shard of {rows} rows has {local.shape[0]}, not {expected}")
    return first, local


def full_arrays(policy: torch.nn.Module, rank: int) -> list[tuple[str, np.ndarray]] | None:
    """Full weights (checkpoint names, fp32 numpy) on rank 0, None elsewhere. Every rank must
    call it: each parameter is gathered with a collective."""
    out = []
    for name, param in checkpoint_parameters(policy):
        tensor = param.detach()
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if rank == 0:
            out.append((name, full.float().cpu().clone().numpy()))  # a snapshot, never a view
    return out if rank == 0 else None
