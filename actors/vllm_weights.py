"""New policy weights into a running vLLM engine. Weights arrive under checkpoint names.

- The learner's shared-memory file is a safetensors checkpoint: every engine worker loads it
  as it is (`load_weights_file`), without renaming, re-bucketing or another copy.
- When the engine core runs in this process (the CPU default) tensors are handed to the
  loader as they are (`load_weights`): views of the learner's file, or arrays from Ray's
  object store.
- Arrays from the object store for an engine in other processes are written bucket by bucket
  as safetensors files in `/dev/shm` (the CPU analogue of CUDA IPC); each file is removed
  before the next is written, so extra memory stays at one bucket. Buckets never split a
  transformer block (see `core.weight_names.module_of`): vLLM fuses projections inside a block
  and processes a block once all of its weights have arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import safe_open, save_file

from core.shm_files import new_file
from core.weight_names import module_of


def buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Group tensors into buckets of about `bucket_bytes`, whole blocks at a time; a block
    larger than a bucket travels alone."""
    bucket: dict[str, torch.Tensor] = {}
    size, block, previous = 0, None, None
    for name, tensor in named_tensors:
        block = module_of(name)
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and block != previous and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = tensor.detach().to("cpu").contiguous()
        size += nbytes
        previous = block
    if bucket:
        yield bucket


def write_bucket(bucket: dict[str, torch.Tensor]) -> Path:
    """One bucket as a safetensors file in shared memory, held by this process until
    `core.shm_files.release` (removed by the next job's sweep if this one dies first)."""
    path = new_file()
    save_file(bucket, str(path))
    return path


class WeightReceiver:
    """Mixed into vLLM's worker class (`worker_extension_cls`); called by name with
    `collective_rpc`. Across processes only a file path travels (`load_weights_file`); with the
    engine core in this process the tensors are handed over as they are (`load_weights`)."""

    model_runner: object  # provided by the vLLM worker this class is mixed into

    def load_weights_file(self, path: str) -> int:
        """Load the tensors of one safetensors file in place; returns how many were loaded."""

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    yield name, f.get_tensor(name)

        return self._reload(weights())

    def load_weights(self, named: dict[str, torch.Tensor]) -> int:
        """Load tensors in place (same process only: no copy on the way)."""
        return self._reload(iter(named.items()))

    def _reload(self, weights: Iterator[tuple[str, torch.Tensor]]) -> int:
        names: list[str] = []

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                names.append(name)
                yield name, tensor

        # A bucket holds some blocks only; vLLM warns once per block left out. Expected there.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(
            logging.ERROR
        )
        runner = self.model_runner
        runner.reload_weights(weights_iterator=counted())  # type: ignore[attr-defined]
        _refresh_tied_head(runner.get_model())  # type: ignore[attr-defined]
        return len(names)


def _refresh_tied_head(model: torch.nn.Module) -> None:
    """A tied `lm_head` shares the embedding's tensor, but the CPU backend packs a private copy
    of it for its GEMM when the model loads; the reload refreshes the embedding only, so the
    head would keep scoring with the OLD embeddings. Re-run the head's post-load processing."""
    language = getattr(model, "language_model", model)
    head = getattr(language, "lm_head", None)
    inner = getattr(language, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    if head is None or embed is None or head.weight is not embed.weight:
        return
    head.quant_method.process_weights_after_loading(head)
