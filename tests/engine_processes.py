"""Finding a vLLM engine core's process, to fail it for real (SIGKILL) or stop it (SIGSTOP)."""

from __future__ import annotations

import os
import signal

import psutil


def engine_cores(parent_pid: int | None = None) -> list[psutil.Process]:
    """The `VLLM::EngineCore` processes below `parent_pid` (default: this process)."""
    parent = psutil.Process(parent_pid or os.getpid())
    return [
        p for p in parent.children(recursive=True) if "EngineCore" in " ".join(p.cmdline() or [])
    ]


def signal_engine_core(parent_pid: int, sig: signal.Signals) -> psutil.Process:
    """Send `sig` to the one engine core below `parent_pid`; returns it (to clean up after)."""
    [core] = engine_cores(parent_pid)
    core.send_signal(sig)
    return core
