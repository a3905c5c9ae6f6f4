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

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import ray

from core.sharded_weights import ParameterSpec, ShardedWeights
from core.shared_weights import SharedWeights
from learners.batch import TrainRow, split_for_ranks
from learners.grpo import Normalizer
from learners.weight_export import WeightTransport

LearnerFactory = Callable[[int, int], Any]  # (rank, world_size) -> LearnerWorker actor handle


class LearnerFailure(RuntimeError):
    """A learner rank died, failed or timed out: the group cannot go on (every FSDP collective
    needs every rank), so all its ranks are stopped."""


class LearnerGroup:
    def __init__(
        self,
        factory: LearnerFactory,
        world_size: int,
        transport: WeightTransport = "auto",
        timeout_s: float = 1800.0,
    ) -> None:
        self.workers = [factory(rank, world_size) for rank in range(world_size)]
        self.transport = transport
        self.timeout_s = timeout_s
        self.failed = False  # a rank failed: every rank is stopped
        self.last_copy_s = 0.0  # the slowest rank's copy time in the last shm export
        self._shared: list[tuple[str, int, str]] = []  # (path, data start, node), oldest first
        self._specs: tuple[ParameterSpec, ...] | None = None
        address = self._all([self.workers[0].rendezvous.remote()], "rendezvous")[0]
        self._all([w.setup.remote(address) for w in self.workers], "setup")
        self.nodes: list[str] = self._all(self._call("node_id"), "node_id")  # each rank's node

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def step(self, rows: Sequence[TrainRow]) -> dict[str, float]:
        """One optimizer step on all rows; the metrics are reduced over the ranks."""
        norm = normalizer(rows)
        shards = split_for_ranks(rows, self.world_size)
        refs = [w.step.remote(s, norm) for w, s in zip(self.workers, shards, strict=True)]
        return dict(self._all(refs, "step")[0])

    def logprobs(self, rows: Sequence[TrainRow]) -> list[list[float]]:
        """The policy's per-token logprobs of `rows`, in order."""
        shards = split_for_ranks(rows, self.world_size)
        refs = [w.logprobs.remote(s) for w, s in zip(self.workers, shards, strict=True)]
        parts = self._all(refs, "logprobs")
        return [parts[i % self.world_size][i // self.world_size] for i in range(len(rows))]

    def export_weights(self, version: int) -> SharedWeights | ShardedWeights:
        """The current weights for the rollout workers: a `SharedWeights` file (transport
        `shm`), every rank's rows in the object store (`object_store`), or both (`auto`: the
        file only when every rank is on one node, where it can be filled)."""
        if self.transport == "shm":
            return self._export_shared(version)
        shared = None
        if self.transport == "auto" and len(set(self.nodes)) == 1:
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

    def _all(self, refs: list[Any], what: str) -> list[Any]:
        """Every rank's result, in rank order, failing fast: the first rank that dies or raises
        (while the others wait for it inside a collective) ends the call, and so does the
        deadline. Then every rank is stopped and `LearnerFailure` says which rank and why."""
        deadline, pending = time.monotonic() + self.timeout_s, list(refs)
        while pending:
            ready, pending = ray.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = [refs.index(ref) for ref in pending]
                self._fail(f"learner {what}: ranks {late} did not answer in {self.timeout_s:.0f} s")
            for ref in ready:
                try:
                    ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    self._fail(f"learner {what}: rank {refs.index(ref)} failed: {cause}")
        return ray.get(refs)

    def _fail(self, message: str) -> NoReturn:
        self.failed = True
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        raise LearnerFailure(
            f"{message}. The learner group stopped all its ranks (FSDP needs every rank); "
            "restart the job with --resume to continue from the last checkpoint"
        )

    def _export_shared(self, version: int) -> SharedWeights:
        if len(self._shared) < 2:
            self._shared.append(ray.get(self.workers[0].create_shared.remote()))
        else:
            # Two files take turns: the older one was published two versions ago, and every
            # worker (starting ones included) has loaded the newer one since. Its pages are
            # already allocated, which makes rewriting it several times faster than a new file.
            self._shared.append(self._shared.pop(0))
        path, data_start, node_id = self._shared[-1]
        seconds = self._all(
            [w.write_shared.remote(path, data_start) for w in self.workers], "export"
        )
        self.last_copy_s = max(seconds)
        return SharedWeights(path, node_id, version)

    def save(self, path: Path, extra: dict[str, Any]) -> None:
        self._all([w.save.remote(str(path), extra) for w in self.workers], "save")

    def load(self, path: Path) -> dict[str, Any]:
        return dict(self._all([w.load.remote(str(path)) for w in self.workers], "load")[0])

    def export_hf(self, out: Path) -> None:
        self._all([w.export_hf.remote(str(out)) for w in self.workers], "export_hf")

    def shutdown(self) -> None:
        if self.failed:  # ranks already stopped; their files, unheld, go with the next job's
            return
        if self._shared:  # readers keep their mappings; the files go
            ray.get(self.workers[0].remove_files.remote([path for path, *_ in self._shared]))
        ray.get([w.shutdown.remote() for w in self.workers])
        for w in self.workers:
            ray.kill(w)


def normalizer(rows: Sequence[TrainRow]) -> Normalizer:
    """The whole step's sampled tokens and rows."""
    return Normalizer(tokens=float(sum(sum(r.loss_mask) for r in rows)), sequences=float(len(rows)))
