"""A learner rank that dies or hangs stops the group with a clear error, in bounded time.

Real faults on a real local Ray: a rank's process is SIGKILLed, and a call misses its
deadline. Without the group's fail-fast wait, the surviving rank would sit inside an FSDP
collective waiting for the dead one (gloo's own timeout is 30 minutes).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import ray

from actors.resources import WorkerResources
from jobs.learner import make_learner_group
from learners.batch import TrainRow
from learners.config import LearnerConfig
from learners.group import LearnerFailure, LearnerGroup

# slow: CI's fast suite stays under 30 minutes; run with `bash scripts/test.sh -m slow`
pytestmark = [pytest.mark.integration, pytest.mark.slow]
RANK = WorkerResources(num_cpus=0.25)


def _group(model: Path, timeout_s: float) -> LearnerGroup:
    return make_learner_group(LearnerConfig(model=str(model)), 2, RANK, timeout_s=timeout_s)


def _all_stopped(group: LearnerGroup) -> bool:
    for worker in group.workers:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(worker.node_id.remote(), timeout=30)
    return True


def test_a_sigkilled_rank_fails_the_step_naming_it(
    local_ray: None, tiny_model_dir: Path, train_rows: list[TrainRow]
) -> None:
    group = _group(tiny_model_dir, timeout_s=600)
    group.step(train_rows)
    pid = ray.get(group.workers[1].__ray_call__.remote(lambda _: os.getpid()))
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(LearnerFailure, match=r"learner step: rank 1 failed") as failure:
        group.step(train_rows)
    assert time.monotonic() - start < 60  # not gloo's 30-minute timeout
    assert "--resume" in str(failure.value)
    assert _all_stopped(group) and group.failed
    group.shutdown()  # returns at once: nothing is left to stop


def test_a_call_past_its_deadline_fails_naming_the_ranks(
    local_ray: None, tiny_model_dir: Path, train_rows: list[TrainRow]
) -> None:
    group = _group(tiny_model_dir, timeout_s=600)
    group.timeout_s = 0.05  # a real step takes seconds on this machine
    with pytest.raises(LearnerFailure, match=r"learner step: ranks \[0, 1\] did not answer"):
        group.step(train_rows)
    assert _all_stopped(group)
