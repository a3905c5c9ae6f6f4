"""Weights files in shared memory: held while their maker lives, swept once it is dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import shm_files
from core.shm_files import new_file, release, sweep_stale

MAKE_AND_WAIT = """
import sys, time
from pathlib import Path
from core.shm_files import new_file
print(new_file(Path(sys.argv[1])), flush=True)
time.sleep(600)
"""


def age(path: Path, seconds: float) -> None:
    """Set the file's times `seconds` into the past."""
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that made a file in `tmp_path` and holds it (until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MAKE_AND_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    yield proc
    proc.kill()
    proc.wait()


def test_new_files_are_in_shared_memory_unique_and_released() -> None:
    a, b = new_file(), new_file()
    try:
        assert a != b and a.suffix == ".safetensors" and a.exists()
        assert a.parent == shm_files.SHM or not shm_files.SHM.is_dir()
    finally:
        release(a)
        release(b)
    assert not a.exists() and not b.exists()


def test_a_file_whose_maker_was_killed_is_swept(
    tmp_path: Path, maker: subprocess.Popen[str]
) -> None:
    assert maker.stdout is not None
    path = Path(maker.stdout.readline().strip())
    age(path, 3600)
    assert sweep_stale(tmp_path) == []  # an hour old, but its maker lives: kept
    assert path.exists()

    maker.send_signal(signal.SIGKILL)  # no cleanup runs
    maker.wait()
    assert sweep_stale(tmp_path) == [path]
    assert not path.exists()


def test_a_young_or_held_file_is_never_swept(tmp_path: Path) -> None:
    mine = new_file(tmp_path)
    age(mine, 3600)  # held by this very process: kept however old
    young = tmp_path / f"{shm_files.PREFIX}-young.safetensors"
    young.write_bytes(b"")  # nobody holds it, but it may be being made right now
    other = tmp_path / "not-ours.safetensors"
    other.write_bytes(b"")
    age(other, 3600)
    assert sweep_stale(tmp_path) == []
    assert mine.exists() and young.exists() and other.exists()
    age(young, 3600)
    assert sweep_stale(tmp_path) == [young]
    release(mine)


def test_new_file_sweeps_first(tmp_path: Path) -> None:
    left = tmp_path / f"{shm_files.PREFIX}-left.safetensors"
    left.write_bytes(b"x" * 1024)
    age(left, 3600)
    made = new_file(tmp_path)
    assert not left.exists() and made.exists()
    release(made)
