"""The reward pool on a real local Ray with a real vLLM CPU verifier engine (tiny model).

One verifier actor and a 2-actor reward pool serve the module. The timeout tests put a
stalling verifier in front of the client: a hung engine cannot be caused on demand, so that
one actor is a stand-in that sleeps through its first calls (and says so).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from engine_processes import signal_engine_core

from actors.actor_pool import PoolConfig
from actors.engine import EngineConfig
from actors.resources import WorkerResources
from actors.reward_worker import RewardPool, RewardWorker
from actors.verifier import VerifierClient, ask_early
from core.trajectory import Trajectory
from jobs.rewards import RewardPoolConfig, VerifierGroupConfig, make_reward_pool, make_verifiers
from rewards.registry import DEFAULT_WEIGHTS, RewardConfig, reward_metrics, score_trajectory
from rewards.verifier import VerifierAnswer, VerifierQuery

pytestmark = pytest.mark.integration
RULES = ("format", "accuracy", "box", "iou", "coverage")


@pytest.fixture(scope="module")
def config(tiny_model_dir: Path) -> RewardPoolConfig:
    engine = EngineConfig(  # the engine core in its own process, to kill it for real below
        model=str(tiny_model_dir), max_model_len=1024, max_images_per_prompt=1, engine_process=True
    )
    return RewardPoolConfig(
        verifier=VerifierGroupConfig(
            engine=engine,
            max_new_tokens=8,
            timeout_s=300,
            resources=WorkerResources(num_cpus=0.5),
        ),
        pool=PoolConfig(
            min_workers=2, max_workers=2, chunk_size=3, request_cluster_resources=False
        ),
        resources=WorkerResources(num_cpus=0.25),
    )


@pytest.fixture(scope="module")
def verifiers(local_ray: None, config: RewardPoolConfig) -> Iterator[list[Any]]:
    verifiers = make_verifiers(config)
    ray.get([v.ready.remote() for v in verifiers])
    yield verifiers
    for v in verifiers:
        with contextlib.suppress(Exception):
            ray.get(v.shutdown.remote(), timeout=60)
        ray.kill(v)


@pytest.fixture(scope="module")
def pool(config: RewardPoolConfig, verifiers: list[Any]) -> Iterator[RewardPool]:
    pool = make_reward_pool(config, verifiers)
    pool.wait_ready()
    yield pool
    pool.shutdown()


def test_pool_scores_every_trajectory_in_order(
    pool: RewardPool, scripted_trajectories: list[Trajectory]
) -> None:
    results = pool.score(scripted_trajectories)
    assert len(results) == len(scripted_trajectories)
    config = RewardConfig()
    for t, result in zip(scripted_trajectories, results, strict=True):
        assert set(result.scores) == set(DEFAULT_WEIGHTS)
        local = score_trajectory(t, None, config)  # rule components need no verifier
        assert {n: result.scores[n] for n in RULES} == {n: local.scores[n] for n in RULES}
        region = result.scores["region"]
        assert not region.failed  # the real verifier answered every crop
        if t.fallback is not None:
            assert region.value == 0.0 and "no region chosen" in (region.reason or "")
    accuracy = [r.scores["accuracy"].value for r in results]
    assert 0 < sum(accuracy) < len(accuracy)  # varied, so the order check above has teeth
    metrics = reward_metrics(results)
    assert metrics["reward/region_failed"] == 0.0


def test_a_dead_reward_actor_is_replaced(
    pool: RewardPool, scripted_trajectories: list[Trajectory]
) -> None:
    victim = next(iter(pool.slots.values())).handle
    ray.kill(victim)
    results = pool.score(scripted_trajectories)
    assert len(results) == len(scripted_trajectories)
    assert not any(s.failed for r in results for s in r.scores.values())
    assert pool.metrics["reward_pool/replaced"] >= 1
    assert pool.size == 2


def test_a_verifier_whose_engine_core_dies_is_restarted(
    verifiers: list[Any], config: RewardPoolConfig, scripted_trajectories: list[Trajectory]
) -> None:
    """A real failure: the verifier's engine core process is SIGKILLed. The next batch fails
    (the engine is dead), the verifier's health says so, the client kills it, Ray restarts it
    with a fresh engine, and the batch is answered by the restarted actor."""
    [verifier] = verifiers
    pid = ray.get(verifier.__ray_call__.remote(lambda self: __import__("os").getpid()))
    signal_engine_core(pid, signal.SIGKILL).wait(timeout=30)
    assert config.verifier is not None
    client = VerifierClient(verifiers, timeout_s=config.verifier.timeout_s, max_attempts=2)
    answers = client.answer(_queries(scripted_trajectories[:3]))
    assert all(a.failure is None for a in answers), answers
    assert client.restarts == 1 and client.retries == 1
    assert ray.get(verifier.health.remote())["weight_version"] == 0


@ray.remote(max_concurrency=4)
class StallingVerifier:
    """Fault injection: sleeps through its first `stalls` calls, then answers "A"."""

    def __init__(self, stalls: int) -> None:
        self.stalls = stalls
        self.calls = 0

    def health(self) -> dict[str, Any]:
        return {}  # it answers health checks while a call sleeps: slow, not dead

    def answer(self, queries: list[VerifierQuery]) -> list[VerifierAnswer]:
        self.calls += 1
        if self.calls <= self.stalls:
            time.sleep(20)
        return [VerifierAnswer("A", None, 0.5) for _ in queries]

    def count(self) -> int:
        return self.calls


def _queries(trajectories: list[Trajectory]) -> list[VerifierQuery]:
    return [VerifierQuery(t.images[1], t.sample.question, t.sample.options) for t in trajectories]


def test_a_timed_out_verifier_call_is_retried(
    local_ray: None, scripted_trajectories: list[Trajectory]
) -> None:
    stalling: Any = StallingVerifier.remote(1)
    client = VerifierClient([stalling], timeout_s=5.0, max_attempts=4)
    answers = client.answer(_queries(scripted_trajectories[:3]))
    assert answers == [VerifierAnswer("A")] * 3
    assert client.retries >= 1  # the first call stalled; a later one answered (load may add more)
    ray.kill(stalling)


def test_a_verifier_that_never_answers_marks_region_failed(
    local_ray: None, scripted_trajectories: list[Trajectory]
) -> None:
    stalling: Any = StallingVerifier.remote(99)
    client = VerifierClient([stalling], timeout_s=3.0, max_attempts=2)
    chosen = [t for t in scripted_trajectories if t.fallback is None][:3]
    results = RewardWorker(RewardConfig(), client).score(chosen)
    for result in results:
        region = result.scores["region"]
        assert region.failed and region.value == 0.0
        assert region.reason == "verifier: timed out after 3 s (2 attempts)"
        assert not result.scores["format"].failed  # the other components still count
    assert reward_metrics(results)["reward/region_failed"] == len(chosen)
    ray.kill(stalling)


def test_answers_asked_early_are_collected_and_lost_ones_asked_again(
    local_ray: None, scripted_trajectories: list[Trajectory]
) -> None:
    """What a rollout worker does before stage 2 (`ask_early`), then the reward actor: it only
    collects the answers, and waits less than the verifier worked (the rest was hidden). An
    early query whose answer is late is asked again through the client, never dropped."""
    chosen = [t for t in scripted_trajectories if t.fallback is None][:4]
    prompt: Any = StallingVerifier.remote(0)
    ask_early(prompt, chosen[:2])
    time.sleep(1.0)  # "stage 2": the answers come in meanwhile
    client = VerifierClient([prompt], timeout_s=3.0, max_attempts=2)
    results = RewardWorker(RewardConfig(), client).score(chosen)  # 2 early, 2 asked now
    assert ray.get(prompt.count.remote()) == 2  # the early batch and one for the other two
    assert not any(r.scores["region"].failed for r in results)
    timing = reward_metrics(results)
    assert timing["time/verifier"] == pytest.approx(4 * 0.5)
    assert 0.0 < timing["time/verifier_hidden"] < 1.0  # the two asked now were waited for
    assert timing["reward/verifier_asked_again"] == 0.0  # those two were never asked early

    late: Any = StallingVerifier.remote(1)  # sleeps through the early batch
    ask_early(late, chosen[:2])
    results = RewardWorker(RewardConfig(), client).score(chosen[:2])
    assert not any(r.scores["region"].failed for r in results)  # asked again, answered
    assert reward_metrics(results)["reward/verifier_asked_again"] == 2.0
    assert ray.get(prompt.count.remote()) == 3
    for actor in (prompt, late):
        ray.kill(actor)
