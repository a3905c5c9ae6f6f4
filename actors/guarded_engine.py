"""An engine with a deadline on every call and a health check that tells the truth.

Every worker that hosts an engine (rollout, verifier, serving) wraps it in a `GuardedEngine`.
Calls run on one thread of the guard's own (engines are not thread-safe, and the caller's
thread stays free to give up), each bounded by `EngineConfig.request_timeout_s`. A call that
raises anything but a `ValueError` (a rejected request: the engine is fine), or that does not
return in time, leaves the engine marked dead: an in-process vLLM engine whose step raised is
left in an unknown state, and its next call would wait forever. Every later call then raises
`EngineDead` at once, and so does `health()`, so the pool (or Ray Serve) replaces the worker
rather than feeding it work. A live engine's `health()` generates one token from a text-only
prompt within the deadline: what the engine can do, not whether the process is up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from actors.engine import (
    Completion,
    Engine,
    EngineConfig,
    Sampling,
    Scored,
    TokenPrompt,
    Weights,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Token ids every vocabulary has; a text-only prompt exercises the attention kernels.
PROBE = TokenPrompt([0, 1, 2, 3])


class EngineDead(RuntimeError):
    """The engine failed or stopped answering; its worker must be replaced."""


class GuardedEngine:
    """Implements `Engine` around another one: one thread, deadlines, dead-engine tracking."""

    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.failure: str | None = None
        self._thread = _EngineThread()

    @property
    def weight_version(self) -> int:
        return self.engine.weight_version

    @property
    def dead(self) -> bool:
        return self.failure is not None

    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        return self._call(self.engine.generate, prompts, sampling, seeds)

    def score(self, prompts: list[TokenPrompt]) -> list[Scored]:
        return self._call(self.engine.score, prompts)

    def update_weights(self, version: int, weights: Weights) -> None:
        self._call(self.engine.update_weights, version, weights)

    def reset_caches(self) -> None:
        """Forget cached prompts and images (engines that cache across calls)."""
        reset = getattr(self.engine, "reset_caches", None)
        if reset is not None:
            self._call(reset)

    def health(self) -> dict[str, Any]:
        """One greedy token from a text-only prompt; raises `EngineDead` if the engine cannot."""
        start = time.perf_counter()
        self.generate([PROBE], Sampling(max_tokens=1, temperature=0.0))
        probe_s = time.perf_counter() - start
        return {"weight_version": self.weight_version, "probe_s": round(probe_s, 4)}

    def shutdown(self) -> None:
        """Stop the engine (unless its thread is stuck in it), then the thread."""
        if not self.dead:
            try:
                self._call(self.engine.shutdown)
            except Exception:
                logger.warning("engine shutdown failed", exc_info=True)
        self._thread.stop()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.failure is not None:
            raise EngineDead(f"the engine is dead ({self.failure})")
        future = self._thread.submit(fn, *args)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            self.failure = f"no answer within {self.timeout_s:g} s"
        except ValueError:  # the request was rejected before the engine ran it
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.exception("engine call failed; the engine is now considered dead")
            raise EngineDead(f"the engine failed ({self.failure})") from exc
        logger.error("engine call %s: %s; the engine is now considered dead", fn, self.failure)
        raise EngineDead(f"the engine is stuck ({self.failure})")


_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class _EngineThread:
    """One daemon thread that runs submitted calls in order. Not a `ThreadPoolExecutor`: its
    threads are joined at interpreter exit, and one stuck in a hung engine would hold the
    process forever."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._jobs = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="engine", daemon=True).start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        """The thread ends after the calls already queued (if it is not stuck in one)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)


def build_engine(config: EngineConfig) -> GuardedEngine:
    """The configured engine (vLLM or transformers), guarded by `config.request_timeout_s`."""
    engine: Engine
    if config.backend == "vllm":
        from actors.vllm_engine import VLLMEngine

        engine = VLLMEngine(config)
    else:
        from actors.hf_engine import HFEngine

        engine = HFEngine(config)
    return GuardedEngine(engine, config.request_timeout_s)
