"""Benchmark: moving weights learner -> N rollout workers, against a plain memory copy, one run.

    python bench/weight_sync.py [--workers 2] [--ranks 2] [--backend vllm] [--sizes 128x2,...]

For each model size (text hidden x layers: 0.6M, 9M and 103M parameters by default) it starts a
learner group of `--ranks` FSDP2 ranks and a pool of N rollout workers on the same random
weights, then times syncs per transport exactly as the train loop runs them:
`export` = `group.export_weights` (shm: every rank copies its shard rows into one file in
/dev/shm; object_store: every rank returns its own shard rows into Ray's object store) and `load` =
`pool.publish_weights` (every worker maps or fetches the weights and loads them into its engine).
Two untimed syncs per transport warm up each side (and allocate both shared files); then the
fastest of 3 timed syncs is reported. The baseline copies the model's bytes once with numpy
(best of 3): the physical limit here.
`move x` is export over that copy (the transport: after it, every worker on the node can read
the weights in place); `total x` adds the engines' own loading (vLLM's CPU backend repacks
weights as it loads). Two more columns split the shm export: `ranks s`, the slowest rank's own
copy of its shard rows into the file (as the rank times it), and `call s`, one no-op Ray call
to every rank (best of 5), the fixed cost of any sync the driver starts; export is about the
two together, so for small models the call is the floor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from actors.actor_pool import PoolConfig
from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from actors.resources import WorkerResources
from jobs.learner import make_learner_group
from jobs.make_tiny_model import make_tiny_model
from jobs.rollout import RolloutConfig, make_rollout_pool
from learners.config import LearnerConfig

TRANSPORTS = ("shm", "object_store")


def copy_seconds(num_bytes: int) -> float:
    """Best of 3 plain copies of `num_bytes` (the physical limit here)."""
    src = np.ones(num_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return best


Times = dict[str, tuple[float, float, float]]  # transport -> (export s, load s, ranks s)


def call_seconds(workers: list[ray.actor.ActorHandle]) -> float:
    """Best of 5 no-op Ray calls to every worker at once: the floor of a driver-started sync."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        ray.get([w.__ray_ready__.remote() for w in workers])
        best = min(best, time.perf_counter() - start)
    return best


def sync_seconds(model: Path, args: argparse.Namespace) -> tuple[Times, float]:
    """(export s, load s, ranks' copy s) of the fastest of 3 timed syncs per transport, after
    two warm-ups of each; and the no-op call time."""
    group = make_learner_group(
        LearnerConfig(model=str(model)), args.ranks, WorkerResources(num_cpus=0.25)
    )
    pool = make_rollout_pool(
        RolloutConfig(
            engine=EngineConfig(backend=args.backend, model=str(model), max_model_len=1024),
            episode=EpisodeConfig(group_size=1),
            pool=PoolConfig(
                min_workers=args.workers, max_workers=args.workers, request_cluster_resources=False
            ),
            resources=WorkerResources(num_cpus=0.25),
        )
    )
    pool.wait_ready()
    times, version = {}, 0
    for transport in TRANSPORTS:
        group.transport = transport
        timed = []
        for _ in range(5):  # two warm-ups (shm: both files allocated), then best of 3
            version += 1
            start = time.perf_counter()
            weights = group.export_weights(version)
            exported = time.perf_counter()
            pool.publish_weights(version, weights)
            ranks = group.last_copy_s if transport == "shm" else float("nan")
            timed.append((exported - start, time.perf_counter() - exported, ranks))
            del weights
        times[transport] = min(timed[2:])  # by export time
    call = call_seconds(group.workers)
    pool.shutdown()
    group.shutdown()
    return times, call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=2, help="learner (FSDP2) ranks")
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--sizes", default="128x2,512x4,1024x12", help="hidden x layers, ...")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            hidden, layers = (int(v) for v in size.split("x"))
            model = make_tiny_model(Path(folder) / size, 0, hidden, layers)
            num_bytes = (model / "model.safetensors").stat().st_size
            rows.append((num_bytes, *sync_seconds(model, args), copy_seconds(num_bytes)))
            (model / "model.safetensors").unlink()
    ray.shutdown()
    print(
        f"learner ({args.ranks} ranks) -> {args.workers} {args.backend} rollout workers, fp32; "
        "x = time / one numpy copy of the model's bytes"
    )
    print(
        f"{'parameters':>11} {'MB':>7} {'copy GB/s':>9} {'transport':>12} {'export s':>8} "
        f"{'ranks s':>7} {'call s':>7} {'move GB/s':>9} {'load s':>7} {'move x':>7} {'total x':>7}"
    )
    for num_bytes, times, call, copy_s in rows:
        for transport, (exported, loaded, ranks) in times.items():
            print(
                f"{num_bytes / 4e6:10.1f}M {num_bytes / 1e6:7.1f} {num_bytes / copy_s / 1e9:9.2f} "
                f"{transport:>12} {exported:8.4f} {ranks:7.4f} {call:7.4f} "
                f"{num_bytes / exported / 1e9:9.2f} {loaded:7.3f} {exported / copy_s:6.1f}x "
                f"{(exported + loaded) / copy_s:6.1f}x"
            )


if __name__ == "__main__":
    main()
