"""`ActorPool` with toy Ray actors: order, retries, replacement, deadlines and scaling in seconds.

The rollout and reward pools are this pool with vLLM engines inside; their integration tests
(tests/integration/) cover the same faults with real engines. Here a toy actor doubles numbers
and misbehaves on cue, so every rule of the pool is checked without an engine.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors.actor_pool import ActorPool, PoolConfig

pytestmark = pytest.mark.integration  # a real local Ray, but no engine: about half a minute


SLOW = 1000


@ray.remote(num_cpus=0.1)
class Toy:
    """Doubles numbers. -1 kills the actor's process, -2 raises, -3 hangs; a chunk with items
    from `SLOW` up takes 0.3 s and returns the actor's (pid, version) for each."""

    def ready(self) -> int:
        return os.getpid()

    def health(self) -> bool:
        return True

    def double(self, chunk: list[int]) -> list[Any]:
        if any(x >= SLOW for x in chunk):  # a slow chunk: (pid, version) for each item
            time.sleep(0.3)
            return [(os.getpid(), self.version)] * len(chunk)
        if -1 in chunk:
            os._exit(1)
        if -2 in chunk:
            raise ValueError("bad item")
        if -3 in chunk:
            time.sleep(60)
        return [2 * x for x in chunk]

    def __init__(self) -> None:
        self.version = 0

    def set_version(self, version: int) -> None:
        time.sleep(0.2)  # a weight load
        self.version = version

    def tag(self, value: str) -> str:
        if value == "fail":
            raise RuntimeError("no")
        return value

    def shutdown(self) -> None:
        pass


def failed(chunk: list[Any], reason: str) -> list[str]:
    return [f"failed: {reason}" for _ in chunk]


def make_pool(**config: Any) -> ActorPool:
    settings = {"min_workers": 2, "max_workers": 2, "chunk_size": 2, **config}
    return ActorPool(
        Toy.remote,
        PoolConfig(request_cluster_resources=False, **settings),
        {"CPU": 0.1},
        lambda actor, chunk: actor.double.remote(chunk),
        "toy",
    )


@pytest.fixture
def pool(local_ray: None) -> Iterator[ActorPool]:
    pool = make_pool()
    pool.wait_ready()
    yield pool
    pool.shutdown()


def test_results_come_back_in_item_order(pool: ActorPool) -> None:
    assert pool.map(list(range(9)), failed) == [2 * x for x in range(9)]
    counts = {"toy/replaced": 0, "toy/retried": 0, "toy/timed_out": 0, "toy/released": 0}
    assert pool.metrics == {**counts, "toy/size": 2}


def test_a_dead_actor_is_replaced_and_its_chunk_fails_only_after_every_attempt(
    pool: ActorPool,
) -> None:
    out = pool.map([1, 2, 3, -1, 5, 6], failed)
    assert out[:2] == [2, 4] and out[4:] == [10, 12]
    assert all(r.startswith("failed: worker died") for r in out[2:4]), out[2:4]  # its chunk
    assert pool.metrics["toy/replaced"] == 3 and pool.metrics["toy/retried"] == 2  # 3 attempts
    assert pool.size == 2 and pool.map([7], failed) == [14]  # still two working actors


def test_an_error_in_the_actor_is_retried_then_recorded_and_the_healthy_actor_kept(
    pool: ActorPool,
) -> None:
    before = set(pool.slots)
    out = pool.map([1, -2], failed)
    assert out == ["failed: ValueError: bad item"] * 2
    assert pool.metrics["toy/retried"] == 2 and pool.metrics["toy/replaced"] == 0
    assert set(pool.slots) == before  # health() answered: nobody replaced


def test_a_hung_actor_is_timed_out_replaced_and_nothing_waits_forever(local_ray: None) -> None:
    pool = make_pool(request_timeout_s=2.0, max_attempts=2)
    pool.wait_ready()
    start = time.monotonic()
    out = pool.map([1, 2, -3, 4], failed)
    assert out[:2] == [2, 4] and out[2:] == ["failed: no result within 2 s"] * 2
    assert time.monotonic() - start < 30
    assert pool.metrics["toy/timed_out"] == 2 and pool.metrics["toy/replaced"] == 2
    pool.shutdown()


def test_broadcast_reaches_every_actor_and_replaces_one_that_fails(pool: ActorPool) -> None:
    pool.broadcast(lambda actor: actor.tag.remote("ok"), "tag")
    assert pool.metrics["toy/replaced"] == 0
    pool.broadcast(lambda actor: actor.tag.remote("fail"), "tag")
    assert pool.metrics["toy/replaced"] == 2 and pool.size == 2


def test_the_pool_grows_under_backlog_and_releases_idle_actors(local_ray: None) -> None:
    pool = make_pool(min_workers=1, max_workers=3, chunk_size=1, idle_timeout_s=0.0)
    pool.wait_ready()
    assert pool.map(list(range(12)), failed) == [2 * x for x in range(12)]
    assert pool.size == 3  # 12 one-item chunks: a backlog over 2 per actor
    pool.wait_ready()  # the last one may still be starting: it is kept until it is up
    assert pool.scale_down_idle() == 2 and pool.size == 1
    assert pool.metrics["toy/released"] == 2 and pool.metrics["toy/size"] == 1
    pool.shutdown()


def test_an_actor_still_starting_is_not_released_as_idle(local_ray: None) -> None:
    pool = make_pool(min_workers=1, max_workers=2, chunk_size=1, idle_timeout_s=0.0)
    pool.wait_ready()
    pool._add_worker()  # what a scale-up does: the new actor is starting, none of its work done
    assert pool.scale_down_idle() == 0 and pool.size == 2  # one ready (the minimum), one starting
    pool.shutdown()


def test_a_broadcast_sent_mid_map_reaches_each_actor_between_its_chunks(pool: ActorPool) -> None:
    """`wait=False`: the call returns while chunks run; each actor answers it after the chunks
    it holds (they keep the old version) and before the ones sent later, and the running map
    collects the answers: nobody waits for the pool to drain."""
    stamps: list[tuple[int, int]] = []
    items = list(range(SLOW, SLOW + 24))
    stamping = threading.Thread(target=lambda: stamps.extend(pool.map(items, failed)))
    stamping.start()
    time.sleep(1.0)  # a few chunks in
    pool.broadcast(lambda actor: actor.set_version.remote(1), "set_version", wait=False)
    assert stamping.is_alive()  # returned at once, with the map still running
    stamping.join(timeout=60)
    versions = [v for _, v in stamps]
    assert len(stamps) == 24 and 0 in versions and 1 in versions
    for pid in {p for p, _ in stamps}:  # each actor: old version, then the new one, never back
        mine = [v for p, v in stamps if p == pid]
        assert mine == sorted(mine) and mine[-1] == 1, mine
    assert not pool._broadcasts  # the map's polls collected both answers
    assert pool.metrics["toy/replaced"] == 0


def test_calls_from_several_threads_share_the_actors(pool: ActorPool) -> None:
    results: dict[str, list[object]] = {}

    def run(name: str, items: list[int]) -> None:
        results[name] = pool.map(items, failed)

    slow = list(range(SLOW, SLOW + 8))
    threads = [threading.Thread(target=run, args=(n, slow)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    assert pool.map([1, 2, 3], failed) == [2, 4, 6]  # and one on this thread meanwhile
    for thread in threads:
        thread.join(timeout=60)
    assert [len(results[n]) for n in ("a", "b")] == [8, 8]
    assert all(isinstance(r, tuple) for n in ("a", "b") for r in results[n])
    assert pool.metrics["toy/replaced"] == 0 and pool.metrics["toy/retried"] == 0
