"""The learner group: K learner actors forming one torch.distributed group (FSDP2).

The driver gives it a step's rows; the group computes the step's normalizer (sampled tokens and
rows, so every rank's loss is its exact share), deals the rows to the ranks (padding with
masked rows so every rank runs as many micro-batches), and runs the step on all ranks at
once. Weights leave through `export_weights` (see `learners.weight_export`): as a file in
shared memory that every rank fills with its own shard rows, as every rank's rows in Ray's
object store, or both (`auto`); no rank gathers the model and nothing passes through the
driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from core.sharded_weights import ParameterSpec, ShardedWeights
from core.shared_weights import SharedWeights
from learners.batch import TrainRow, split_for_ranks
from learners.grpo import Normalizer
from learners.weight_export import WeightTransport

LearnerFactory = Callable[[int, int], Any]  # (rank, world_size) -> LearnerWorker actor handle


class LearnerGroup:
    def __init__(
        self, factory: LearnerFactory, world_size: int, transport: WeightTransport = "shm"
    ) -> None:
        self.workers = [factory(rank, world_size) for rank in range(world_size)]
        self.transport = transport
        self.last_copy_s = 0.0  # the slowest rank's copy time in the last shm export
        self._shared: list[tuple[str, int, str]] = []  # (path, data start, node), oldest first
        self._specs: tuple[ParameterSpec, ...] | None = None
        address = ray.get(self.workers[0].rendezvous.remote())
        ray.get([w.setup.remote(address) for w in self.workers])

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def step(self, rows: Sequence[TrainRow]) -> dict[str, float]:
        """One optimizer step on all rows; the metrics are reduced over the ranks."""
        norm = normalizer(rows)
        shards = split_for_ranks(rows, self.world_size)
        metrics = ray.get(
            [w.step.remote(s, norm) for w, s in zip(self.workers, shards, strict=True)]
        )
        return dict(metrics[0])

    def logprobs(self, rows: Sequence[TrainRow]) -> list[list[float]]:
        """The policy's per-token logprobs of `rows`, in order."""
        shards = split_for_ranks(rows, self.world_size)
        parts = ray.get([w.logprobs.remote(s) for w, s in zip(self.workers, shards, strict=True)])
        return [parts[i % self.world_size][i // self.world_size] for i in range(len(rows))]

    def export_weights(self, version: int) -> SharedWeights | ShardedWeights:
        """The current weights for the rollout workers: a `SharedWeights` file (transport
        `shm`), every rank's rows in the object store (`object_store`), or both (`auto`: the
        file only when every rank is on one node, where it can be filled)."""
        if self.transport == "shm":
            return self._export_shared(version)
        shared = None
        if self.transport == "auto" and len(set(ray.get(self._call("node_id")))) == 1:
            shared = self._export_shared(version)
        return self.sharded(version, shared)

    def sharded(self, version: int, shared: SharedWeights | None = None) -> ShardedWeights:
        """Every rank's own rows returned into the object store on its node (no collective);
        returns once they are all there."""
        if self._specs is None:
            self._specs = tuple(ray.get(self.workers[0].parameter_specs.remote()))
        refs = self._call("own_rows")
        ray.wait(refs, num_returns=len(refs), fetch_local=False)
        return ShardedWeights(version, self._specs, tuple(refs), shared)

    def _call(self, method: str) -> list[Any]:
        return [getattr(w, method).remote() for w in self.workers]

    def _export_shared(self, version: int) -> SharedWeights:
        if len(self._shared) < 2:
            self._shared.append(ray.get(self.workers[0].create_shared.remote()))
        else:
            # Two files take turns: the older one was published two versions ago, and every
            # worker (starting ones included) has loaded the newer one since. Its pages are
            # already allocated, which makes rewriting it several times faster than a new file.
            self._shared.append(self._shared.pop(0))
        path, data_start, node_id = self._shared[-1]
        seconds = ray.get([w.write_shared.remote(path, data_start) for w in self.workers])
        self.last_copy_s = max(seconds)
        return SharedWeights(path, node_id, version)

    def save(self, path: Path, extra: dict[str, Any]) -> None:
        ray.get([w.save.remote(str(path), extra) for w in self.workers])

    def load(self, path: Path) -> dict[str, Any]:
        return dict(ray.get([w.load.remote(str(path)) for w in self.workers])[0])

    def export_hf(self, out: Path) -> None:
        ray.get([w.export_hf.remote(str(out)) for w in self.workers])

    def shutdown(self) -> None:
        if self._shared:  # readers keep their mappings; the files go
            ray.get(self.workers[0].remove_files.remote([path for path, *_ in self._shared]))
        ray.get([w.shutdown.remote() for w in self.workers])
        for w in self.workers:
            ray.kill(w)


def normalizer(rows: Sequence[TrainRow]) -> Normalizer:
    """The whole step's sampled tokens and rows."""
    return Normalizer(tokens=float(sum(sum(r.loss_mask) for r in rows)), sequences=float(len(rows)))
