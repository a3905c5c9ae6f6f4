"""A pool of rollout workers (Ray actors): load-balanced, autoscaled, and fault tolerant.

A step's samples are cut into chunks; each chunk goes to the ready worker with the least
outstanding work, and results are gathered back in sample order. When the backlog exceeds
`scale_up_backlog` chunks per worker the pool adds a worker (asking Ray's autoscaler for its
resources on a cluster); idle workers above `min_workers` are released by `scale_down_idle`.
Every new worker first loads the current weights, then takes work. A worker that dies is
replaced and its chunks run again elsewhere; a chunk that keeps failing yields trajectories
marked failed, so a step never silently loses samples.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import RayActorError

from core.sample import Sample
from core.trajectory import Trajectory

logger = logging.getLogger(__name__)

WorkerFactory = Callable[[], Any]  # returns a new RolloutWorker actor handle


class PoolConfig(BaseModel):
    """Size, dispatch and scaling of the rollout pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_workers: int = Field(1, ge=1)
    """Workers kept even when idle."""
    max_workers: int = Field(1, ge=1)
    """Upper bound when scaling up."""
    chunk_size: int = Field(4, ge=1)
    """Samples per request to a worker (each yields chunk_size x G trajectories)."""
    max_inflight_per_worker: int = Field(2, ge=1)
    """Requests queued on one worker at once, so its engine batches across requests."""
    scale_up_backlog: int = Field(2, ge=1)
    """Queued chunks per worker above which one more worker is started."""
    idle_timeout_s: float = Field(60.0, ge=0.0)
    """Idle time after which a worker above the minimum is released."""
    max_attempts: int = Field(3, ge=1)
    """Tries per chunk (a worker death counts) before its trajectories are marked failed."""
    request_cluster_resources: bool = True
    """Ask Ray's autoscaler for the workers' resources when scaling (no-op without one)."""


@dataclass
class _Slot:
    handle: Any
    ready: Any  # ObjectRef of the worker's readiness probe
    is_ready: bool = False
    outstanding: int = 0
    last_busy: float = field(default_factory=time.monotonic)


@dataclass
class _Chunk:
    index: int
    samples: list[Sample]
    attempts: int = 0


class RolloutPool:
    """Owns the worker actors; `run` turns a step's samples into trajectories in order."""

    def __init__(
        self, factory: WorkerFactory, config: PoolConfig, worker_resources: dict[str, float]
    ) -> None:
        self.factory = factory
        self.config = config
        self.worker_resources = worker_resources
        self.slots: dict[int, _Slot] = {}
        self._ids = itertools.count()
        self.weights: tuple[int, Any] | None = None  # (version, ObjectRef of named arrays)
        self.metrics: dict[str, float] = {"pool/replaced": 0, "pool/retried_chunks": 0}
        for _ in range(config.min_workers):
            self._add_worker()

    @property
    def size(self) -> int:
        return len(self.slots)

    def wait_ready(self) -> None:
        """Block until every worker's engine is up."""
        for slot in list(self.slots.values()):
            ray.get(slot.ready)
            slot.is_ready = True

    def update_weights(self, version: int, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Put the weights in the object store once; every worker (and later ones) loads them."""
        self.weights = (version, ray.put([(n, _to_wire(t)) for n, t in named]))
        refs = [s.handle.update_weights.remote(*self.weights) for s in self.slots.values()]
        ray.get(refs)

    def run(self, samples: list[Sample], group_size: int) -> list[Trajectory]:
        """Trajectories for every sample (`group_size` each), in sample order."""
        size = self.config.chunk_size
        queue = deque(
            _Chunk(i, samples[start : start + size])
            for i, start in enumerate(range(0, len(samples), size))
        )
        results: dict[int, list[Trajectory]] = {}
        inflight: dict[Any, tuple[int, _Chunk]] = {}
        while queue or inflight:
            self._scale_up(len(queue))
            self._dispatch(queue, inflight)
            waiting = list(inflight) + [s.ready for s in self.slots.values() if not s.is_ready]
            done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in inflight:
                    self._collect(ref, inflight, queue, results, group_size)
                else:
                    self._mark_ready(ref, inflight, queue)
        return [t for i in sorted(results) for t in results[i]]

    def scale_down_idle(self) -> int:
        """Release idle workers above the minimum; returns how many were released."""
        now, released = time.monotonic(), 0
        for wid, slot in list(self.slots.items()):
            idle = slot.outstanding == 0 and now - slot.last_busy >= self.config.idle_timeout_s
            if idle and self.size > self.config.min_workers:
                self._release(wid)
                released += 1
        if released:
            self._request_resources()
        return released

    def shutdown(self) -> None:
        for wid in list(self.slots):
            self._release(wid)

    def _dispatch(self, queue: deque[_Chunk], inflight: dict[Any, tuple[int, _Chunk]]) -> None:
        while queue:
            ready = [
                (s.outstanding, wid)
                for wid, s in self.slots.items()
                if s.is_ready and s.outstanding < self.config.max_inflight_per_worker
            ]
            if not ready:
                return
            _, wid = min(ready)
            chunk = queue.popleft()
            chunk.attempts += 1
            slot = self.slots[wid]
            slot.outstanding += 1
            inflight[slot.handle.rollout.remote(chunk.samples)] = (wid, chunk)

    def _collect(
        self,
        ref: Any,
        inflight: dict[Any, tuple[int, _Chunk]],
        queue: deque[_Chunk],
        results: dict[int, list[Trajectory]],
        group_size: int,
    ) -> None:
        wid, chunk = inflight.pop(ref)
        try:
            results[chunk.index] = ray.get(ref)
        except RayActorError as exc:
            logger.warning("rollout worker %d died: %s", wid, exc)
            self._replace(wid, inflight, queue)
            self._retry(chunk, queue, results, group_size, f"worker died: {exc}")
            return
        except Exception as exc:  # an error inside the worker: retry elsewhere, then give up
            logger.exception("chunk %d failed on worker %d", chunk.index, wid)
            self._retry(chunk, queue, results, group_size, f"{type(exc).__name__}: {exc}")
        slot = self.slots.get(wid)
        if slot is not None:
            slot.outstanding -= 1
            slot.last_busy = time.monotonic()

    def _retry(
        self,
        chunk: _Chunk,
        queue: deque[_Chunk],
        results: dict[int, list[Trajectory]],
        group_size: int,
        reason: str,
    ) -> None:
        if chunk.attempts < self.config.max_attempts:
            self.metrics["pool/retried_chunks"] += 1
            queue.appendleft(chunk)
            return
        version = self.weights[0] if self.weights else 0
        results[chunk.index] = [
            Trajectory(s, g, version, failure=reason)
            for s in chunk.samples
            for g in range(group_size)
        ]

    def _mark_ready(self, ref: Any, inflight: dict, queue: deque[_Chunk]) -> None:
        wid = next(w for w, s in self.slots.items() if s.ready == ref)
        try:
            ray.get(ref)
            self.slots[wid].is_ready = True
        except RayActorError as exc:
            logger.warning("rollout worker %d died while starting: %s", wid, exc)
            self._replace(wid, inflight, queue)

    def _replace(self, wid: int, inflight: dict[Any, tuple[int, _Chunk]], queue: deque) -> None:
        """Drop a dead worker, requeue its other chunks, and start a new one."""
        for ref, (owner, chunk) in list(inflight.items()):
            if owner == wid:
                del inflight[ref]
                queue.appendleft(chunk)
        if wid in self.slots:
            del self.slots[wid]
            self.metrics["pool/replaced"] += 1
        while self.size < self.config.min_workers:
            self._add_worker()

    def _scale_up(self, backlog: int) -> None:
        too_much = backlog > self.config.scale_up_backlog * max(1, self.size)
        if too_much and self.size < self.config.max_workers:
            self._add_worker()
            self._request_resources()

    def _add_worker(self) -> None:
        handle = self.factory()
        if self.weights is not None:  # actor calls run in order: weights before any rollout
            handle.update_weights.remote(*self.weights)
        self.slots[next(self._ids)] = _Slot(handle, handle.ready.remote())
        logger.info("rollout pool: %d workers", self.size)

    def _release(self, wid: int) -> None:
        slot = self.slots.pop(wid)
        try:
            ray.get(slot.handle.shutdown.remote(), timeout=30)
        except Exception:  # already dead or stuck: kill it either way
            logger.debug("worker %d did not shut down cleanly", wid)
        ray.kill(slot.handle)
        logger.info("rollout pool: released a worker, %d left", self.size)

    def _request_resources(self) -> None:
        if not self.config.request_cluster_resources:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[dict(self.worker_resources)] * self.size)


def _to_wire(tensor: torch.Tensor) -> np.ndarray | torch.Tensor:
    """numpy travels zero-copy through Ray's object store; dtypes numpy lacks stay tensors."""
    tensor = tensor.detach().to("cpu")
    return tensor if tensor.dtype == torch.bfloat16 else tensor.contiguous().numpy()
