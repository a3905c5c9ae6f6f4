"""Checkpoints of a learner group, without pickle anywhere on the load path.

Sharded (to resume): every rank writes its local shards of the policy and of AdamW's state and
its RNG state to `rank{r}-of-{W}.safetensors`; rank 0 writes `state.json` (step, scheduler,
world size, and whatever the driver adds, e.g. the data cursor). Resuming needs the same world
size; the error says so. torch's distributed checkpoint (DCP) is not used because it reads its
metadata file with `pickle.load`. Export: full weights gathered to rank 0 and written as a
plain HF folder (`model.safetensors` + the source model's config and tokenizer files) that
transformers and vLLM load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

STATE_FILE = "state.json"
_HF_FILES = ("*.json", "*.jinja", "*.txt", "*.model")  # config, tokenizer, templates


@dataclass(frozen=True)
class RankState:
    """What one rank's sharded checkpoint holds: its shards of the policy and of the optimizer's
    state, and the scheduler (the same on every rank)."""

    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rank: int
    world_size: int

    @property
    def shard_name(self) -> str:
        return f"rank{self.rank}-of-{self.world_size}.safetensors"


def save_sharded(state: RankState, step: int, path: Path, extra: dict[str, Any]) -> None:
    """Every rank calls this; `step` and `extra` (JSON-able) are stored from rank 0."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {"rng/cpu": torch.get_rng_state()}
    for name, param in state.policy.named_parameters():
        tensors[f"model/{name}"] = _local(param.detach())
        for key, value in state.optimizer.state.get(param, {}).items():
            tensors[f"optim/{name}/{key}"] = _local(value)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / state.shard_name)
    if state.rank == 0:
        saved = {
            "step": step,
            "world_size": state.world_size,
            "scheduler": state.scheduler.state_dict(),
            "extra": extra,
        }
        (path / STATE_FILE).write_text(json.dumps(saved, indent=2))
    dist.barrier()


def load_sharded(state: RankState, path: Path) -> tuple[int, dict[str, Any]]:
    """Every rank calls this after `setup`: loads `state` in place; returns the saved step and
    the driver's `extra`."""
    saved = json.loads((path / STATE_FILE).read_text())
    if saved["world_size"] != state.world_size:
        raise ValueError(
            f"checkpoint {path} was saved by {saved['world_size']} learner ranks; "
            f"this group has {state.world_size} (resume with the same size, or export to HF)"
        )
    tensors = load_file(path / state.shard_name)
    torch.set_rng_state(tensors["rng/cpu"])
    with torch.no_grad():
        for name, param in state.policy.named_parameters():
            _local(param).copy_(tensors[f"model/{name}"])
            keys = [k for k in tensors if k.startswith(f"optim/{name}/")]
            if keys:
                state.optimizer.state[param] = {
                    k.rsplit("/", 1)[1]: _like(param, tensors[k]) for k in keys
                }
    state.scheduler.load_state_dict(saved["scheduler"])
    return int(saved["step"]), dict(saved["extra"])


def export_hf(named: Iterable[tuple[str, torch.Tensor]] | None, source: Path, out: Path) -> None:
    """Every rank calls this after gathering `named` (full weights under checkpoint names on
    rank 0, None elsewhere); rank 0 writes a plain HF model folder to `out`: the weights and
    `source`'s config (its dtype set to the weights') and tokenizer files."""
    if named is not None:
        out.mkdir(parents=True, exist_ok=True)
        weights = dict(named)
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        for pattern in _HF_FILES:
            for file in source.glob(pattern):
                if file.name != "model.safetensors.index.json":
                    shutil.copy(file, out / file.name)
        dtypes = {tensor.dtype for tensor in weights.values()}
        if len(dtypes) == 1 and (out / "config.json").exists():
            _set_dtype(out / "config.json", str(dtypes.pop()).removeprefix("torch."))
    dist.barrier()


def _set_dtype(config_file: Path, dtype: str) -> None:
    """Record the weights' dtype in an HF config, under the key(s) it already uses (`dtype` in
    transformers 5, `torch_dtype` before), at the top level and in each sub-config."""
    config = json.loads(config_file.read_text())
    keys = [key for key in ("dtype", "torch_dtype") if key in config] or ["dtype"]
    for part in (config, *(v for v in config.values() if isinstance(v, dict))):
        for key in keys:
            if key in part or part is config:
                part[key] = dtype
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _like(param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """An optimizer-state tensor shaped and placed as `param` (a DTensor if it is one)."""
    if isinstance(param, DTensor) and local.dim() > 0:
        return DTensor.from_local(
            local, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
        )
    return local
