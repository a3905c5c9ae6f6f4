"""Every bench script runs to completion at a small size, so that none can rot unnoticed.

A smoke run, not a timing: each script runs as a user runs it (`python bench/NAME.py`, from the
repository root, in a fresh process) and must exit 0 with its closing line and no failures.
The figures these sizes print mean nothing; the documented runs use the scripts' defaults.
The ones that start a vLLM engine take about a minute each, so they run in the `slow` tier
(`bash scripts/test.sh -m slow`) to keep CI under 30 minutes; the others run in every CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SLOW = pytest.mark.slow  # starts a vLLM engine: about a minute
# script, small arguments, a line the finished run prints, marks
RUNS = [
    (
        "rollout",
        ["--samples", "2", "--group-size", "2", "--max-new-tokens", "8"],
        "pool / raw vLLM",
        [SLOW],
    ),
    ("reward_pool", ["--samples", "4", "--reward-workers", "1"], "pool / one process", [SLOW]),
    (
        "tokens",
        ["--samples", "2", "--full-tokens", "1024", "--max-new-tokens", "8"],
        "two-stage / single-stage",
        [SLOW],
    ),
    (
        "serve",
        ["--clients", "1", "--seconds", "2", "--max-tokens", "8"],
        "tokens: vision tokens",
        [SLOW],
    ),
    ("stream_memory", ["--num", "40"], "total:", []),
    ("stream_train", ["--rows", "200", "--images", "4"], "peak RSS", []),
    (
        "weight_sync",
        ["--workers", "1", "--ranks", "1", "--backend", "hf", "--sizes", "128x2"],
        "object_store",
        [SLOW],  # about 80 s: CI's fast suite stays under 30 minutes
    ),
    ("pipeline", ["--steps", "2", "--staleness", "2"], "k=2: async / sync steps/s", [SLOW]),
]


@pytest.mark.parametrize(
    ("script", "args", "closing"),
    [pytest.param(*run[:3], marks=run[3], id=run[0]) for run in RUNS],
)
def test_bench_script_runs(script: str, args: list[str], closing: str) -> None:
    command = [sys.executable, f"bench/{script}.py", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert closing in done.stdout, done.stdout[-3000:]
    assert "error:" not in done.stdout, done.stdout[-3000:]
