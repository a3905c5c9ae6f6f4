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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from core.weight_names import to_checkpoint_name

STATE_FILE = "state.json"
_HF_FILES = ("*.json", "*.jinja", "*.txt", "*.model")  # config, tokenizer, templates


def save_sharded(worker: Any, path: Path, extra: dict[str, Any]) -> None:
    """Every rank calls this; `extra` (JSON-able) is stored from rank 0."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {"rng/cpu": torch.get_rng_state()}
    for name, param in worker.policy.named_parameters():
        tensors[f"model/{name}"] = _local(param.detach())
        for key, value in worker.optimizer.state.get(param, {}).items():
            tensors[f"optim/{name}/{key}"] = _local(value)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / _shard_name(worker))
    if worker.rank == 0:
        state = {
            "step": worker.step_count,
            "world_size": worker.world_size,
            "scheduler": worker.scheduler.state_dict(),
            "extra": extra,
        }
        (path / STATE_FILE).write_text(json.dumps(state, indent=2))
    dist.barrier()


def load_sharded(worker: Any, path: Path) -> dict[str, Any]:
    """Every rank calls this after `setup`; returns the driver's `extra`."""
    state = json.loads((path / STATE_FILE).read_text())
    if state["world_size"] != worker.world_size:
        raise ValueError(
            f"checkpoint {path} was saved by {state['world_size']} learner ranks; "
            f"this group has {worker.world_size} (resume with the same size, or export to HF)"
        )
    tensors = load_file(path / _shard_name(worker))
    torch.set_rng_state(tensors["rng/cpu"])
    with torch.no_grad():
        for name, param in worker.policy.named_parameters():
            _local(param).copy_(tensors[f"model/{name}"])
            keys = [k for k in tensors if k.startswith(f"optim/{name}/")]
            if keys:
                worker.optimizer.state[param] = {
                    k.rsplit("/", 1)[1]: _like(param, tensors[k]) for k in keys
                }
    worker.scheduler.load_state_dict(state["scheduler"])
    worker.step_count = int(state["step"])
    return dict(state["extra"])


def export_hf(worker: Any, out: Path) -> None:
    """Every rank calls this (gathers); rank 0 writes a plain HF model folder to `out`."""
    named = worker.named_parameters()
    if worker.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        tied = bool(getattr(worker.policy.config, "tie_word_embeddings", False))
        weights = {
            to_checkpoint_name(name): torch.from_numpy(array)
            for name, array in named
            if not (tied and name == "lm_head.weight")
        }
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        source = Path(worker.config.model)
        for pattern in _HF_FILES:
            for file in source.glob(pattern):
                if file.name != "model.safetensors.index.json":
                    shutil.copy(file, out / file.name)
    dist.barrier()


def _shard_name(worker: Any) -> str:
    return f"rank{worker.rank}-of-{worker.world_size}.safetensors"


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _like(param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """An optimizer-state tensor shaped and placed as `param` (a DTensor if it is one)."""
    if isinstance(param, DTensor) and local.dim() > 0:
        return DTensor.from_local(
            local, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
        )
    return local
