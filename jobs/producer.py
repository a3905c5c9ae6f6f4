"""Where the train loop's batches come from: rolled out, scored as they finish, and (with
`train.max_staleness = k >= 1`) produced on a driver thread up to k weight versions ahead.

`StreamScorer` scores a batch chunk by chunk while the rest of it is still being rolled out
(the rollout pool hands each finished chunk over). `Producer` gives the train loop one
`Produced` batch per step: with k = 0 it rolls the batch out when asked, with the weights the
learner just published; with k >= 1 a thread rolls out batch b as soon as the workers have been
sent version b - 1 - k, so every trajectory trained at step b lags the learner (version b - 1)
by at most k versions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from actors.actor_pool import PoolClosed
from actors.reward_worker import RewardPool
from core.trajectory import Trajectory
from rewards.registry import RewardResult

logger = logging.getLogger(__name__)


@dataclass
class Produced:
    """A batch rolled out and scored: its trajectories, their scores, the weight version the
    workers were sent when its rollout began, its rollout's and its scoring's times (scoring:
    what was left after the last chunk was rolled out), and the data cursor after it."""

    trajectories: list[Trajectory]
    results: list[RewardResult]
    version: int
    times: dict[str, float]
    cursor: int


class StreamScorer:
    """Scores chunks of trajectories on a thread of its own, as they come (`add`); every chunk
    that arrived while one was scored goes into the next call, spread over the reward pool.
    Use as a context manager, then read `results()`."""

    def __init__(self, rewards: RewardPool) -> None:
        self.rewards = rewards
        self._inbox: queue.Queue[tuple[int, list[Trajectory]] | None] = queue.Queue()
        self._scored: dict[int, list[RewardResult]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="stream-scorer", daemon=True)

    def __enter__(self) -> StreamScorer:
        self._thread.start()
        return self

    def add(self, index: int, trajectories: list[Trajectory]) -> None:
        """Queue chunk `index` (chunks are put back together in index order)."""
        self._inbox.put((index, trajectories))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._inbox.put(None)  # no more chunks: score what is queued, then end
        self._thread.join()

    def results(self) -> list[RewardResult]:
        """Every chunk's results, in chunk order (after the `with` block)."""
        if self._error is not None:
            raise self._error
        return [r for i in sorted(self._scored) for r in self._scored[i]]

    def _loop(self) -> None:
        closed = False
        while not closed:
            items = [self._inbox.get()]
            while not self._inbox.empty():
                items.append(self._inbox.get_nowait())
            closed = None in items
            chunks = [item for item in items if item is not None]
            if not chunks or self._error is not None:
                continue
            try:
                scored = self.rewards.score([t for _, chunk in chunks for t in chunk])
            except BaseException as exc:  # raised by `results()`; keep draining the inbox
                self._error = exc
                continue
            for index, chunk in chunks:
                self._scored[index], scored = scored[: len(chunk)], scored[len(chunk) :]


class Producer:
    """The train loop's batches, one per step from `first` to `last`: `produce(cursor)` makes
    one; with `max_staleness` k >= 1 a thread makes batch b once `version()` (the weights the
    workers were sent) is at least b - 1 - k. `busy_s` adds up the time spent producing."""

    def __init__(
        self,
        produce: Callable[[int], Produced],
        version: Callable[[], int],
        first: int,
        last: int,
        cursor: int,
        max_staleness: int,
    ) -> None:
        self.produce, self.version = produce, version
        self.max_staleness = max_staleness
        self.cursor = cursor
        self.busy_s = 0.0
        self._ready: queue.Queue[Produced | BaseException] = queue.Queue()
        self._sent = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if max_staleness:
            steps = range(first, last + 1)
            self._thread = threading.Thread(target=self._ahead, args=(steps,), daemon=True)
            self._thread.name = "rollout-ahead"
            self._thread.start()

    def next(self) -> Produced:
        """The next step's batch: made now (k = 0), or the thread's next one (k >= 1)."""
        if self._thread is None:
            return self._timed()
        while True:
            try:
                item = self._ready.get(timeout=5.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the rollout-ahead thread ended without a batch") from None
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def sent(self) -> None:
        """The workers were sent new weights: later batches may begin."""
        with self._sent:
            self._sent.notify_all()

    def stop(self) -> None:
        """No batch after the one being made (if any); the pools' shutdown ends that one."""
        self._stop.set()
        self.sent()

    def _timed(self) -> Produced:
        start = time.perf_counter()
        produced = self.produce(self.cursor)
        self.cursor = produced.cursor
        self.busy_s += time.perf_counter() - start
        return produced

    def _ahead(self, steps: range) -> None:
        for step in steps:
            with self._sent:
                while self.version() < step - 1 - self.max_staleness and not self._stop.is_set():
                    self._sent.wait(timeout=1.0)
            if self._stop.is_set():
                return
            try:
                self._ready.put(self._timed())
            except PoolClosed:
                return
            except BaseException as exc:
                logger.exception("rolling out the batch of step %d failed", step)
                self._ready.put(exc)
                return
