"""The engine guard: deadlines, dead-engine tracking and the health probe, on stand-in engines.

The faults here (an engine that raises, one that never returns) are stand-ins on purpose: the
real ones (vLLM's engine core failing mid-step, or stopped) are caused in
`tests/integration/test_engine_faults.py`; these pin the guard's rules quickly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from actors.engine import Completion, Sampling, TokenPrompt
from actors.guarded_engine import PROBE, EngineDead, GuardedEngine


@dataclass
class StandIn:
    """Answers one token per prompt; `raise_` or `hang` make it fail the next calls."""

    raise_: Exception | None = None
    hang: threading.Event | None = None
    weight_version: int = 0
    threads: list[str] = field(default_factory=list)

    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        self.threads.append(threading.current_thread().name)
        if self.hang is not None:
            self.hang.wait()
        if self.raise_ is not None:
            raise self.raise_
        return [[Completion([7], [-0.1], "length")] for _ in prompts]

    def shutdown(self) -> None:
        pass


def test_health_generates_a_token_on_the_engine_thread() -> None:
    engine = StandIn(weight_version=3)
    guard = GuardedEngine(engine, timeout_s=5)  # type: ignore[arg-type]
    health = guard.health()
    assert health["weight_version"] == 3 and health["probe_s"] >= 0
    guard.generate([PROBE], Sampling())
    assert len(set(engine.threads)) == 1 and engine.threads[0].startswith("engine")


def test_a_rejected_request_leaves_the_engine_alive() -> None:
    engine = StandIn(raise_=ValueError("prompt too long"))
    guard = GuardedEngine(engine, timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt too long"):
        guard.generate([PROBE], Sampling())
    engine.raise_ = None
    assert not guard.dead and guard.health()["weight_version"] == 0


def test_a_failed_call_marks_the_engine_dead_and_later_calls_fail_fast() -> None:
    engine = StandIn(raise_=RuntimeError("CPU Generator does not use offset"))
    guard = GuardedEngine(engine, timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(EngineDead, match="RuntimeError: CPU Generator"):
        guard.generate([PROBE], Sampling())
    engine.raise_ = None
    for call in (guard.health, lambda: guard.generate([PROBE], Sampling())):
        with pytest.raises(EngineDead, match="the engine is dead"):
            call()
    assert len(engine.threads) == 1  # nothing reached the engine after it failed


def test_a_call_that_hangs_ends_at_its_deadline() -> None:
    release = threading.Event()
    guard = GuardedEngine(StandIn(hang=release), timeout_s=0.5)  # type: ignore[arg-type]
    start = time.monotonic()
    with pytest.raises(EngineDead, match=r"stuck \(no answer within 0.5 s\)"):
        guard.generate([PROBE], Sampling())
    assert time.monotonic() - start < 2.0
    with pytest.raises(EngineDead):
        guard.health()
    release.set()
    guard.shutdown()
