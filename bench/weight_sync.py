"""Benchmark: moving weights learner -> N rollout workers, against a plain memory copy, one run.

    python bench/weight_sync.py [--workers 2] [--backend vllm] [--sizes 128x2,512x4,1024x12]

For each model size (text hidden x layers: 0.6M, 9M and 103M parameters by default) it starts a
one-rank learner group and a pool of N rollout workers on the same random weights, then times
the whole sync as the train loop runs it: the learner gathers its full weights into Ray's
object store (`weights_ref`), every worker fetches them and loads them into its engine
(`publish_weights`). One untimed sync warms up each side. Effective GB/s is the fp32 bytes
delivered (model bytes x N) per second; the baseline copies the same bytes once with numpy.
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
from jobs.learner import make_learner_group
from jobs.make_tiny_model import make_tiny_model
from jobs.rollout import RolloutConfig, WorkerResources, make_rollout_pool
from learners.config import LearnerConfig


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


def sync_seconds(model: Path, workers: int, backend: str) -> tuple[float, float, int]:
    """Seconds of one learner -> workers sync (after a warm-up), of its export part (gather into
    the object store), and the model's bytes."""
    group = make_learner_group(LearnerConfig(model=str(model)), 1, WorkerResources(num_cpus=0.25))
    pool = make_rollout_pool(
        RolloutConfig(
            engine=EngineConfig(backend=backend, model=str(model), max_model_len=1024),
            episode=EpisodeConfig(group_size=1),
            pool=PoolConfig(
                min_workers=workers, max_workers=workers, request_cluster_resources=False
            ),
            resources=WorkerResources(num_cpus=0.25),
        )
    )
    pool.wait_ready()
    ref = group.weights_ref()
    num_bytes = sum(array.nbytes for _, array in ray.get(ref))
    pool.publish_weights(1, ref)  # warm-up
    del ref
    start = time.perf_counter()
    ref = group.weights_ref()
    exported = time.perf_counter() - start
    pool.publish_weights(2, ref)
    seconds = time.perf_counter() - start
    pool.shutdown()
    group.shutdown()
    return seconds, exported, num_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--sizes", default="128x2,512x4,1024x12", help="hidden x layers, ...")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            hidden, layers = (int(v) for v in size.split("x"))
            model = make_tiny_model(Path(folder) / size, 0, hidden, layers)
            seconds, exported, num_bytes = sync_seconds(model, args.workers, args.backend)
            rows.append((num_bytes, seconds, exported, copy_seconds(num_bytes)))
            (model / "model.safetensors").unlink()
    ray.shutdown()
    print(f"learner -> {args.workers} {args.backend} rollout worker(s), fp32 weights")
    print(
        f"{'parameters':>11} {'MB':>7} {'sync s':>8} {'export s':>8} {'GB/s':>6} "
        f"{'copy GB/s':>9} {'ratio':>6}"
    )
    for num_bytes, seconds, exported, copy_s in rows:
        sync_gbps = num_bytes * args.workers / seconds / 1e9
        copy_gbps = num_bytes / copy_s / 1e9
        print(
            f"{num_bytes // 4 / 1e6:10.1f}M {num_bytes / 1e6:7.1f} {seconds:8.3f} {exported:8.3f} "
            f"{sync_gbps:6.2f} {copy_gbps:9.2f} {copy_gbps / sync_gbps:5.1f}x"
        )


if __name__ == "__main__":
    main()
