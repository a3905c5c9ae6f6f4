"""Full model weights in one shared-memory file: the CPU analogue of CUDA IPC for weight sync.

The file is a plain safetensors file in `/dev/shm`. The learner group lays it out once per
version (`create`: header, then room for every tensor), each learner rank copies its own
FSDP shard rows straight into place (`place_of_rows`; no gather, no pickling, one memory copy in
all), and every rollout worker on the node maps it and hands zero-copy views to its engine
(`SharedWeights.tensors`). Being safetensors, the same file can be read by any tool that reads
checkpoints. It lives only on the node that wrote it; across nodes use the object store.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float64: "F64",
}
_BY_NAME = {v: k for k, v in _DTYPES.items()}
_ALIGN = 64  # the data section starts on a cache line; tensors follow without gaps


@dataclass(frozen=True)
class TensorSpec:
    """Where one full tensor lives in the file (byte offsets from the data section)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SharedWeights:
    """A handle to a version of the weights in shared memory; cheap to send to actors."""

    path: str
    node_id: str
    version: int

    def local_path(self) -> str:
        """The file's path, checked to be on this node (a clear error otherwise)."""
        if not Path(self.path).exists():
            raise FileNotFoundError(
                f"shared weights {self.path} (version {self.version}) are not on this node; "
                f"they were written on node {self.node_id}: with learners and rollout workers "
                "on different nodes set learner.weight_transport = 'object_store'"
            )
        return self.path

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) views of the file in layout order, without copying. They stay valid
        after the file is unlinked, as long as they are referenced."""
        data_start, specs = read_layout(self.local_path())
        size = data_start + (specs[-1].end if specs else 0)
        # MAP_PRIVATE: reads share the page cache with every other reader; nobody writes here.
        raw = torch.from_file(self.path, shared=False, size=size, dtype=torch.uint8)
        for spec in specs:
            dtype = _BY_NAME[spec.dtype]
            view = raw[data_start + spec.start : data_start + spec.end].view(dtype)
            yield spec.name, view.view(spec.shape)


def layout(tensors: Sequence[tuple[str, torch.dtype, tuple[int, ...]]]) -> list[TensorSpec]:
    """Byte ranges of full tensors packed in order. Every range must start aligned to its
    element size, so that views need no copy: mixed dtypes must come largest element first."""
    specs, offset = [], 0
    for name, dtype, shape in tensors:
        if dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {dtype} cannot be shared (known: {list(_DTYPES)})")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if offset % itemsize:
            raise ValueError(f"{name}: offset {offset} is not aligned to {dtype}")
        nbytes = math.prod(shape) * itemsize
        specs.append(TensorSpec(name, _DTYPES[dtype], tuple(shape), offset, offset + nbytes))
        offset += nbytes
    return specs


def create(path: Path, specs: Sequence[TensorSpec]) -> int:
    """Write the safetensors header and size the file for the data; returns the data start."""
    header = {
        s.name: {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [s.start, s.end]}
        for s in specs
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    padded = text + b" " * (-(8 + len(text)) % _ALIGN)  # safetensors allows trailing spaces
    data_start = 8 + len(padded)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(padded)) + padded)
        f.truncate(data_start + (specs[-1].end if specs else 0))
    return data_start


def read_layout(path: str | Path) -> tuple[int, list[TensorSpec]]:
    """The data start and the tensor ranges of a safetensors file, in offset order."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    specs = [
        TensorSpec(name, v["dtype"], tuple(v["shape"]), *v["data_offsets"])
        for name, v in header.items()
    ]
    return 8 + length, sorted(specs, key=lambda s: s.start)


def map_for_writing(path: Path) -> torch.Tensor:
    """The whole file as a writable uint8 tensor (MAP_SHARED: writes land in the file)."""
    return torch.from_file(str(path), shared=True, size=path.stat().st_size, dtype=torch.uint8)


def place_of_rows(
    mapped: torch.Tensor, data_start: int, spec: TensorSpec, row: int, rows: torch.Tensor
) -> torch.Tensor:
    """The view of the mapped file where `rows` (the full tensor's slice along dim 0 from
    `row` on) belong: copy into it to write them."""
    row_bytes = (spec.end - spec.start) // spec.shape[0] if spec.shape else 0
    start = data_start + spec.start + row * row_bytes
    nbytes = rows.numel() * rows.element_size()
    if _DTYPES.get(rows.dtype) != spec.dtype or start + nbytes > data_start + spec.end:
        raise ValueError(f"{spec.name}: rows {row}.. {rows.dtype} {tuple(rows.shape)} do not fit")
    return mapped[start : start + nbytes].view(rows.dtype).view(rows.shape)
