"""Weights out of a sharded learner, for the rollout engines.

Every rank exports only its own FSDP2 shard rows, in the export dtype (the training dtype:
bf16 under mixed precision); no rank gathers the model. Per `LearnerGroupConfig.weight_transport`:
- `shm`: rank 0 lays out a safetensors file in shared memory (`core.shared_weights`) and every
  rank copies its rows into place. Rollout workers on that node map the file.
- `object_store`: every rank returns its rows into Ray's object store
  (`core.sharded_weights`); a rollout worker on any node fetches every rank's rows and
  assembles the tensors.
- `auto`: both; each rollout worker maps the file when it is on its node and fetches the rows
  otherwise.
Only the HF export (`full_tensors`, once per run) gathers full tensors, to rank 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch.distributed.tensor import DTensor, Shard

from core.sharded_weights import to_wire
from core.shared_weights import (
    TensorSpec,
    create,
    layout,
    map_for_writing,
    place_of_rows,
)
from core.shm_files import new_file
from core.weight_names import to_checkpoint_name

WeightTransport = Literal["shm", "object_store", "auto"]
ShardRows = list[tuple[int, int, Any]]  # (parameter index, first row, rows on the wire)


def checkpoint_parameters(policy: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The parameters under the names a checkpoint on disk gives them, in module order: an
    `lm_head.weight` tied to the embeddings is left out, as checkpoints leave it out."""
    tied = bool(getattr(getattr(policy, "config", None), "tie_word_embeddings", False))
    named = ((to_checkpoint_name(name), p) for name, p in policy.named_parameters())
    return [(name, p) for name, p in named if not (tied and name == "lm_head.weight")]


def weight_specs(policy: torch.nn.Module, dtype: torch.dtype) -> list[TensorSpec]:
    """The layout of the full parameters in `dtype` (global shapes, checkpoint names), in
    module order."""
    return layout([(name, dtype, tuple(p.shape)) for name, p in checkpoint_parameters(policy)])


def create_shared(policy: torch.nn.Module, dtype: torch.dtype) -> tuple[str, int]:
    """A new, empty shared-memory weights file laid out for `policy` in `dtype`: (path, data
    start)."""
    path = new_file()
    return str(path), create(path, weight_specs(policy, dtype))


CopyPlan = list[tuple[torch.Tensor, torch.Tensor]]  # (place in the mapped file, source rows)


@torch.no_grad()
def copy_plan(
    policy: torch.nn.Module, path: str, data_start: int, rank: int, dtype: torch.dtype
) -> CopyPlan:
    """Where each of this rank's shard rows goes in the shared file (laid out in `dtype`).
    Built once per file: the sources are the live local shards (the optimizer updates them in
    place) and the places are views of one lasting mapping, so each export is only the copies
    (which cast to the file's dtype)."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"shared weights file {path} is on another node than learner rank {rank}: "
            "with learner ranks on several nodes set learner.weight_transport = 'object_store'"
        )
    mapped, plan = map_for_writing(Path(path)), []
    specs = weight_specs(policy, dtype)
    for spec, (_, param) in zip(specs, checkpoint_parameters(policy), strict=True):
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


@torch.no_grad()
def own_rows(policy: torch.nn.Module, rank: int, dtype: torch.dtype) -> ShardRows:
    """This rank's shard rows of every parameter, as `dtype` snapshots ready for Ray's object
    store (numpy where numpy has the dtype, so they travel zero-copy)."""
    out = []
    for index, (_, param) in enumerate(checkpoint_parameters(policy)):
        first, local = shard_rows(param.detach(), rank)
        if local is not None and local.numel():
            out.append((index, first, to_wire(local.to("cpu", dtype, copy=True))))
    return out


def full_tensors(
    policy: torch.nn.Module, rank: int, dtype: torch.dtype
) -> list[tuple[str, torch.Tensor]] | None:
    """Full weights (checkpoint names, `dtype`, on the CPU) on rank 0, None elsewhere. Every
    rank must call it: each parameter is gathered with a collective."""
    out = []
    for name, param in checkpoint_parameters(policy):
        tensor = param.detach()
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if rank == 0:
            out.append((name, full.to("cpu", dtype, copy=True)))  # a snapshot, never a view
    return out if rank == 0 else None
