"""The learner group: K learner actors forming one torch.distributed group (FSDP2).

The driver gives it a step's rows; the group computes the step's normalizer (sampled tokens and
rows, so every rank's loss is its exact share), deals the rows to the ranks (padding with
masked rows so every rank runs as many micro-batches), and runs the step on all ranks at
once. Weights leave through `export_weights` (see `learners.weight_export`): as a file in
shared memory that every rank fills with its own shards, or gathered to rank 0 into Ray's
object store; either way nothing passes through the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

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

    def export_weights(self, version: int) -> SharedWeights | Any:
        """The current weights for the rollout workers: a `SharedWeights` file (transport
        `shm`) or an ObjectRef of [(name, array)] (`object_store`)."""
        if self.transport == "object_store":
            return self.weights_ref()
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

    def weights_ref(self) -> Any:
        """ObjectRef of rank 0's full weights [(name, array)]; all ranks join the gathers."""
        refs = [w.named_parameters.remote() for w in self.workers]
        ray.get(refs[1:])
        ray.wait(refs[:1])
        return refs[0]

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
