"""A rollout worker whose vLLM engine hangs mid-step, on a real local Ray.

The fault is real and caused on purpose: the worker's engine core runs in its own process
(`engine_process`), which the test stops (SIGSTOP: an engine that no longer answers but does
not die) while a step is running. The step must come back with every trajectory, within its
deadline, from a replacement worker, and say so in the metrics. (A SIGKILLed engine core is
the verifier's test in `test_reward_pool.py`; a failing in-process engine, serving's.)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray
from engine_processes import signal_engine_core

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig, RolloutPool
from core.sample import Sample
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from core.trajectory import Trajectory
from jobs.rollout import RolloutConfig, make_rollout_pool

pytestmark = pytest.mark.integration
G = 2
ENGINE_DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def pool(local_ray: None, tiny_model_dir: Path) -> Iterator[RolloutPool]:
    config = RolloutConfig(
        engine=EngineConfig(
            model=str(tiny_model_dir),
            max_model_len=2048,
            engine_process=True,
            request_timeout_s=ENGINE_DEADLINE_S,
        ),
        episode=EpisodeConfig(
            coarse_max_tokens=DEMO_COARSE_TOKENS,
            crop_max_tokens=DEMO_COARSE_TOKENS,
            group_size=G,
            max_new_tokens=16,
        ),
        pool=PoolConfig(
            min_workers=1,
            max_workers=1,
            chunk_size=2,
            request_timeout_s=120,
            health_timeout_s=30,
            request_cluster_resources=False,
        ),
        resources=WorkerResources(num_cpus=0.5),
    )
    pool = make_rollout_pool(config)
    pool.wait_ready()
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return list(generate(SyntheticConfig(), num=4, seed=21))


def _worker_pid(pool: RolloutPool) -> int:
    [slot] = pool.slots.values()
    return int(ray.get(slot.handle.__ray_call__.remote(lambda self: __import__("os").getpid())))


def _run_with_fault(
    pool: RolloutPool, samples: list[Sample], sig: signal.Signals
) -> tuple[list[Trajectory], float]:
    """Start a step, send `sig` to the worker's engine core while it works; the step's result
    and how long it took. A stopped core is SIGKILLed afterwards (it would linger)."""
    pid = _worker_pid(pool)
    result: list[Trajectory] = []
    start = time.monotonic()
    runner = threading.Thread(target=lambda: result.extend(pool.run(samples)))
    runner.start()
    [slot] = pool.slots.values()
    while slot.outstanding == 0 and runner.is_alive():
        time.sleep(0.02)
    core = signal_engine_core(pid, sig)
    runner.join(timeout=600)
    with contextlib.suppress(psutil.NoSuchProcess):
        core.kill()
    assert not runner.is_alive(), "the step never came back"
    return result, time.monotonic() - start


def test_a_hung_engine_times_out_and_its_work_is_retried_elsewhere(
    pool: RolloutPool, samples: list[Sample]
) -> None:
    pool.run(samples[:1])  # warm
    replaced = pool.metrics["pool/replaced"]
    trajectories, seconds = _run_with_fault(pool, samples, signal.SIGSTOP)
    assert len(trajectories) == len(samples) * G
    assert all(t.failure is None for t in trajectories)
    assert pool.metrics["pool/replaced"] == replaced + 1
    assert pool.metrics["pool/retried"] >= 1
    # the deadline, the health probe (dead at once), a new engine's start and the rerun
    assert seconds < ENGINE_DEADLINE_S + 300
