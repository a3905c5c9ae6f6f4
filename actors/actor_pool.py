"""A pool of Ray actors that map chunks of a list: load-balanced, autoscaled, fault tolerant.

A call's items are cut into chunks; each chunk goes to the ready actor with the least
outstanding work, and results are gathered back in item order. When the backlog exceeds
`scale_up_backlog` chunks per actor the pool adds one (asking Ray's autoscaler for its
resources on a cluster); idle actors above `min_workers` are released by `scale_down_idle`.
An actor that dies is replaced and its chunks run again elsewhere; a chunk that keeps failing
is turned into failure records by the caller's `failed`, so a call never silently loses items.
Nothing waits forever: an actor that holds a chunk past `request_timeout_s`, or that is not up
within `start_timeout_s`, counts as stuck and is killed and replaced; after a chunk fails, the
actor's `health()` must answer within `health_timeout_s` or it is replaced too (a dead engine
reports itself there). The rollout pool and the reward pool are this pool with their own task
(a callable that sends one chunk to one actor) and failure records.

Calls may overlap: several threads may `map` at once (the train loop validates while a driver
thread rolls out ahead) and `broadcast` without waiting (weights published while chunks are in
flight). Actors run their calls in the order sent, so a broadcast reaches each actor after its
chunks in flight and before any chunk sent later; every thread that polls the pool collects
the broadcast's answers. A lock guards the pool's state; nobody holds it while waiting on Ray.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import RayActorError

logger = logging.getLogger(__name__)

ActorFactory = Callable[[], Any]  # returns a new actor handle
# (actor handle, chunk) -> the ObjectRef of one result per item, e.g.
# `lambda actor, chunk: actor.score.remote(chunk)`
Task = Callable[[Any, list[Any]], Any]
Failed = Callable[[list[Any], str], list[Any]]  # (chunk, reason) -> one record per result
# (chunk index, its final results): called as each chunk is done, in completion order
OnResult = Callable[[int, list[Any]], None]
# What each pool of this process asks the autoscaler for, by pool name: Ray keeps one request
# per cluster (each call replaces the last), so every call sends all pools' bundles together.
_REQUESTED: dict[str, list[dict[str, float]]] = {}


class PoolConfig(BaseModel):
    """Size, dispatch and scaling of a pool of actors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_workers: int = Field(1, ge=1)
    """Actors kept even when idle."""
    max_workers: int = Field(1, ge=1)
    """Upper bound when scaling up."""
    chunk_size: int = Field(4, ge=1)
    """Items per request to an actor."""
    max_inflight_per_worker: int = Field(2, ge=1)
    """Requests queued on one actor at once, so its engine batches across requests."""
    scale_up_backlog: int = Field(2, ge=1)
    """Queued chunks per actor above which one more actor is started."""
    idle_timeout_s: float = Field(60.0, ge=0.0)
    """Idle time after which an actor above the minimum is released."""
    max_attempts: int = Field(3, ge=1)
    """Tries per chunk (an actor death counts) before its items are marked failed; also the
    starts in a row that may fail before the pool gives up with an error."""
    request_timeout_s: float = Field(900.0, gt=0.0)
    """Longest an actor may hold one chunk, from dispatch (queueing on the actor included), or
    one broadcast call (a weight load). Past it the actor counts as stuck: it is killed and
    replaced, and its chunks run elsewhere."""
    start_timeout_s: float = Field(900.0, gt=0.0)
    """Longest a new actor may take to become ready (its engine loads the model)."""
    health_timeout_s: float = Field(60.0, gt=0.0)
    """Longest an actor's health probe may take after one of its chunks failed; an actor whose
    probe fails or is late is replaced."""
    request_cluster_resources: bool = True
    """Ask Ray's autoscaler for the actors' resources when scaling (no-op without one)."""


@dataclass
class _Slot:
    handle: Any
    ready: Any  # ObjectRef of the actor's readiness probe
    is_ready: bool = False
    outstanding: int = 0
    last_busy: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Chunk:
    index: int
    items: list[Any]
    attempts: int = 0
    deadline: float = 0.0  # monotonic time by which its current attempt must be back


@dataclass
class _Call:
    """The state of one `map` call."""

    failed: Failed = lambda chunk, reason: []
    queue: deque[_Chunk] = field(default_factory=deque)
    task: Task = lambda actor, chunk: None
    results: dict[int, list[Any]] = field(default_factory=dict)
    inflight: dict[Any, tuple[int, _Chunk]] = field(default_factory=dict)
    on_result: OnResult | None = None

    def done(self, index: int, results: list[Any]) -> None:
        self.results[index] = results
        if self.on_result is not None:
            self.on_result(index, results)


class PoolClosed(RuntimeError):
    """The pool was shut down while a call was running (e.g. from another thread)."""


class ActorPool:
    """Owns the actors; `map` runs `task` over chunks of items and returns results in order.

    Actors must offer `ready()` (a cheap probe that returns once they can work), `health()`
    (raises unless they can work now), the method `task` calls (a list of items -> one list of
    results for them) and `shutdown()`. `name` prefixes the pool's metrics and log lines.
    """

    def __init__(
        self,
        factory: ActorFactory,
        config: PoolConfig,
        worker_resources: dict[str, float],
        task: Task,
        name: str,
    ) -> None:
        self.factory = factory
        self.config = config
        self.worker_resources = worker_resources
        self.task = task
        self.name = name
        self.slots: dict[int, _Slot] = {}
        self._ids = itertools.count()
        self._failed_starts = 0
        self._lock = threading.RLock()
        self._closed = False
        # broadcast calls not answered yet: ref -> (actor id, deadline, what)
        self._broadcasts: dict[Any, tuple[int, float, str]] = {}
        names = ("replaced", "retried", "timed_out", "released")
        self._metric = {n: f"{name}/{n}" for n in names}
        self.counts: dict[str, float] = dict.fromkeys(self._metric.values(), 0)
        with self._lock:
            for _ in range(config.min_workers):
                self._add_worker()

    @property
    def size(self) -> int:
        return len(self.slots)

    @property
    def metrics(self) -> dict[str, float]:
        """Cumulative replaced, retried, timed-out and released counts, and the pool size now
        (starting actors included)."""
        with self._lock:
            return {**self.counts, f"{self.name}/size": float(self.size)}

    def wait_ready(self) -> None:
        """Block until every actor is up (a stuck or failed start is replaced, within limits)."""
        call = _Call()
        while any(not s.is_ready for s in list(self.slots.values())):
            self._poll(call)

    def map(self, items: list[Any], failed: Failed, on_result: OnResult | None = None) -> list[Any]:
        """The pool's `task`'s results for every item, in item order (chunks that keep failing:
        `failed(chunk)`). `on_result(index, results)` sees each chunk's final results as soon as
        they are in (results of chunk `index`, of `chunk_size` items from `index * chunk_size`)."""
        size = self.config.chunk_size
        starts = range(0, len(items), size)
        chunks = deque(_Chunk(i, items[s : s + size]) for i, s in enumerate(starts))
        call = _Call(failed, chunks, self.task, on_result=on_result)
        while call.queue or call.inflight:
            with self._lock:
                self._scale_up(len(call.queue))
                self._dispatch(call)
            self._poll(call)
        return [r for i in sorted(call.results) for r in call.results[i]]

    def broadcast(self, call: Callable[[Any], Any], what: str, wait: bool = True) -> None:
        """`call(actor)` (an ObjectRef) for every actor, each within `request_timeout_s`; an
        actor that fails or is late is replaced (the new one is prepared by `_start`). `what`
        names the call in log lines. `wait=False` returns at once: each actor runs the call
        after the chunks it holds, and whoever polls the pool next collects the answers."""
        with self._lock:
            deadline = time.monotonic() + self.config.request_timeout_s
            sent = [call(s.handle) for s in self.slots.values()]
            for ref, wid in zip(sent, self.slots, strict=True):
                self._broadcasts[ref] = (wid, deadline, what)
        while wait and any(ref in self._broadcasts for ref in sent):
            self._poll(_Call())

    def settle(self) -> None:
        """Block until every broadcast so far is answered (or its actor replaced)."""
        while self._broadcasts:
            self._poll(_Call())

    def scale_down_idle(self) -> int:
        """Release ready actors idle past `idle_timeout_s` while more than `min_workers` are
        ready (the train loop calls it between steps; starting actors are kept); returns how
        many were released."""
        with self._lock:
            now, chosen = time.monotonic(), []
            ready = sum(s.is_ready for s in self.slots.values())
            busy = {wid for wid, _, _ in self._broadcasts.values()}
            for wid, slot in list(self.slots.items()):
                idle = now - slot.last_busy >= self.config.idle_timeout_s
                free = slot.is_ready and slot.outstanding == 0 and wid not in busy
                if idle and free and ready > self.config.min_workers:
                    chosen.append(self.slots.pop(wid))
                    ready -= 1
            if chosen:
                self.counts[self._metric["released"]] += len(chosen)
                self._request_resources()
        for slot in chosen:
            self._release(slot)
        return len(chosen)

    def shutdown(self) -> None:
        """Release every actor, and withdraw this pool's request to the autoscaler (Ray keeps a
        request until the next one: left in place, it would hold the nodes after the job). A
        call still running in another thread ends with `PoolClosed`."""
        with self._lock:
            self._closed = True
            slots = list(self.slots.values())
            self.slots.clear()
            self._request_resources()
        for slot in slots:
            self._release(slot)

    def _start(self, handle: Any) -> Any:
        """Hook: the ObjectRef that resolves once a new actor can take work (its `ready()`; a
        pool may first prepare it, as actor calls run in order). An error there is a failed
        start: the actor is replaced."""
        return handle.ready.remote()

    def _poll(self, call: _Call) -> None:
        """Wait up to a second for a result, a start or a broadcast's answer (without holding
        the lock), then handle what came and enforce the deadlines."""
        with self._lock:
            if self._closed:
                raise PoolClosed(f"{self.name} pool was shut down")
            starting = [s.ready for s in self.slots.values() if not s.is_ready]
            refs = list(call.inflight) + starting + list(self._broadcasts)
        if refs:
            done, _ = ray.wait(refs, num_returns=1, timeout=1.0)
        else:  # every actor is busy with another call's chunks
            done = []
            time.sleep(0.05)
        with self._lock:
            for ref in done:
                if ref in call.inflight:
                    self._collect(ref, call)
                elif ref in self._broadcasts:
                    self._answered(ref, call)
                else:
                    self._mark_ready(ref, call)
            self._expire(call)

    def _dispatch(self, call: _Call) -> None:
        while call.queue:
            ready = [
                (s.outstanding, wid)
                for wid, s in self.slots.items()
                if s.is_ready and s.outstanding < self.config.max_inflight_per_worker
            ]
            if not ready:
                return
            _, wid = min(ready)
            chunk = call.queue.popleft()
            chunk.attempts += 1
            chunk.deadline = time.monotonic() + self.config.request_timeout_s
            slot = self.slots[wid]
            slot.outstanding += 1
            ref = call.task(slot.handle, chunk.items)
            call.inflight[ref] = (wid, chunk)

    def _collect(self, ref: Any, call: _Call) -> None:
        wid, chunk = call.inflight.pop(ref)
        slot = self.slots.get(wid)
        if slot is not None:
            slot.outstanding -= 1
            slot.last_busy = time.monotonic()
        try:
            results = ray.get(ref)
        except RayActorError as exc:
            logger.warning("%s actor %d died: %s", self.name, wid, exc)
            self._replace(wid, call)
            self._retry(chunk, call, f"worker died: {exc}")
            return
        except Exception as exc:  # an error inside the actor: retry elsewhere, then give up
            logger.exception("%s chunk %d failed on actor %d", self.name, chunk.index, wid)
            cause = getattr(exc, "cause", None) or exc  # the actor's own error, not Ray's wrap
            self._retry(chunk, call, f"{type(cause).__name__}: {cause}")
            if not self._healthy(wid):
                self._replace(wid, call, kill=True)
            return
        call.done(chunk.index, results)

    def _answered(self, ref: Any, call: _Call) -> None:
        wid, _, what = self._broadcasts.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:
            logger.warning("%s actor %d failed %s: %s", self.name, wid, what, exc)
            self._replace(wid, call, kill=True)

    def _healthy(self, wid: int) -> bool:
        """The actor's own `health()` within `health_timeout_s` (a dead engine raises there)."""
        slot = self.slots.get(wid)
        if slot is None:
            return False
        try:
            ray.get(slot.handle.health.remote(), timeout=self.config.health_timeout_s)
        except Exception as exc:
            logger.warning("%s actor %d is unhealthy: %s", self.name, wid, exc)
            return False
        return True

    def _expire(self, call: _Call) -> None:
        """Kill and replace actors that hold a chunk or a broadcast call past its deadline, or
        start too slowly."""
        now, timeout = time.monotonic(), self.config.request_timeout_s
        for ref, (wid, chunk) in list(call.inflight.items()):
            if now > chunk.deadline and ref in call.inflight:
                logger.warning("%s actor %d held a chunk over %g s", self.name, wid, timeout)
                self.counts[self._metric["timed_out"]] += 1
                del call.inflight[ref]
                self._replace(wid, call, kill=True)
                self._retry(chunk, call, f"no result within {timeout:g} s")
        for ref, (wid, deadline, what) in list(self._broadcasts.items()):
            if now > deadline and ref in self._broadcasts:
                logger.warning("%s actor %d: %s over %g s", self.name, wid, what, timeout)
                self.counts[self._metric["timed_out"]] += 1
                self._replace(wid, call, kill=True)
        for wid, slot in list(self.slots.items()):
            if not slot.is_ready and now - slot.started > self.config.start_timeout_s:
                self._failed_start(wid, f"not ready within {self.config.start_timeout_s:g} s")
                self._replace(wid, call, kill=True)

    def _retry(self, chunk: _Chunk, call: _Call, reason: str) -> None:
        if chunk.attempts < self.config.max_attempts:
            self.counts[self._metric["retried"]] += 1
            call.queue.appendleft(chunk)
        else:
            call.done(chunk.index, call.failed(chunk.items, reason))

    def _mark_ready(self, ref: Any, call: _Call) -> None:
        wid = next((w for w, s in self.slots.items() if s.ready == ref and not s.is_ready), None)
        if wid is None:  # another thread took it, or the actor was replaced meanwhile
            return
        try:
            ray.get(ref)
        except Exception as exc:
            self._failed_start(wid, str(exc))
            self._replace(wid, call, kill=True)
            return
        self.slots[wid].is_ready = True
        self._failed_starts = 0

    def _failed_start(self, wid: int, reason: str) -> None:
        logger.warning("%s actor %d did not start: %s", self.name, wid, reason)
        self._failed_starts += 1
        if self._failed_starts >= self.config.max_attempts:
            raise RuntimeError(
                f"{self.name} actors failed to start {self._failed_starts} times in a row;"
                f" the last: {reason}"
            )

    def _replace(self, wid: int, call: _Call, kill: bool = False) -> None:
        """Drop an actor (killing it first if it may still run), requeue its other chunks of
        this call (another call's fail when it dies and are retried there), forget its
        broadcast calls, and start new ones up to the minimum."""
        for ref, (owner, chunk) in list(call.inflight.items()):
            if owner == wid:
                del call.inflight[ref]
                call.queue.appendleft(chunk)
        for ref, (owner, _, _) in list(self._broadcasts.items()):
            if owner == wid:
                del self._broadcasts[ref]
        slot = self.slots.pop(wid, None)
        if slot is not None:
            if kill:
                ray.kill(slot.handle)
            self.counts[self._metric["replaced"]] += 1
        while self.size < self.config.min_workers and not self._closed:
            self._add_worker()

    def _scale_up(self, backlog: int) -> None:
        too_much = backlog > self.config.scale_up_backlog * max(1, self.size)
        if too_much and self.size < self.config.max_workers:
            self._add_worker()
            self._request_resources()

    def _add_worker(self) -> None:
        handle = self.factory()
        self.slots[next(self._ids)] = _Slot(handle, self._start(handle))
        logger.info("%s pool: %d actors", self.name, self.size)

    def _release(self, slot: _Slot) -> None:
        """Shut a removed actor down (not under the lock: it may take a while), then kill it."""
        try:
            ray.get(slot.handle.shutdown.remote(), timeout=30)
        except Exception:  # already dead or stuck: kill it either way
            logger.debug("%s actor did not shut down cleanly", self.name)
        ray.kill(slot.handle)
        logger.info("%s pool: released an actor, %d left", self.name, self.size)

    def _request_resources(self) -> None:
        if not self.config.request_cluster_resources:
            return
        from ray.autoscaler.sdk import request_resources

        _REQUESTED[self.name] = [dict(self.worker_resources)] * self.size
        request_resources(bundles=[b for bundles in _REQUESTED.values() for b in bundles])
