"""Benchmark: scored trajectories/s of the reward pool vs scoring in one process, one run.

    python bench/reward_pool.py [--samples 32] [--reward-workers 2] [--verifier-workers 1]

Both sides score the same scripted trajectories (4 per synthetic sample, 3 of which ask the
verifier) with every default component, the verifier being the tiny model in a vLLM CPU
engine. In one process: a `RewardWorker` calling an in-process `VerifierWorker`. The pool:
Ray reward actors calling verifier actors. Start-up and one warm-up batch are excluded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray

from actors.actor_pool import PoolConfig
from actors.engine import EngineConfig
from actors.resources import WorkerResources
from actors.reward_worker import RewardWorker
from actors.verifier import VerifierWorker
from core.scripted import scripted_trajectories
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from jobs.make_tiny_model import make_tiny_model
from jobs.rewards import RewardPoolConfig, VerifierGroupConfig, make_reward_pool, make_verifiers
from rewards.registry import RewardConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--reward-workers", type=int, default=2)
    parser.add_argument("--verifier-workers", type=int, default=1)
    args = parser.parse_args()
    samples = list(generate(SyntheticConfig(), num=args.samples, seed=0))
    trajectories = scripted_trajectories(samples, DEMO_COARSE_TOKENS)
    with tempfile.TemporaryDirectory() as folder:
        model = str(make_tiny_model(Path(folder) / "tiny", seed=0))
        engine = EngineConfig(model=model, max_model_len=1024, max_images_per_prompt=1)

        verifier = VerifierWorker(engine, max_new_tokens=16)
        local = RewardWorker(RewardConfig(), verifier)
        local.score(trajectories[:4])  # warm-up
        start = time.perf_counter()
        local.score(trajectories)
        local_s = time.perf_counter() - start
        verifier.shutdown()

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        config = RewardPoolConfig(
            verifier=VerifierGroupConfig(
                engine=engine,
                max_new_tokens=16,
                workers=args.verifier_workers,
                resources=WorkerResources(num_cpus=0.5),
            ),
            pool=PoolConfig(
                min_workers=args.reward_workers,
                max_workers=args.reward_workers,
                chunk_size=-(-len(trajectories) // args.reward_workers),
                request_cluster_resources=False,
            ),
            resources=WorkerResources(num_cpus=0.25),
        )
        verifiers = make_verifiers(config)
        ray.get([v.ready.remote() for v in verifiers])
        pool = make_reward_pool(config, verifiers)
        pool.wait_ready()
        pool.score(trajectories[:4])  # warm-up
        start = time.perf_counter()
        results = pool.score(trajectories)
        pool_s = time.perf_counter() - start
        failed = sum(s.failed for r in results for s in r.scores.values())
        pool.shutdown()
        ray.shutdown()

    n = len(trajectories)
    print(f"{n} trajectories ({args.samples} samples x 4), every default component")
    print(f"{'one process':32s} {local_s:7.2f} s {n / local_s:8.1f} traj/s")
    name = f"pool: {args.reward_workers} reward, {args.verifier_workers} verifier actor(s)"
    print(f"{name:32s} {pool_s:7.2f} s {n / pool_s:8.1f} traj/s ({failed} failed scores)")
    print(f"pool / one process: {local_s / pool_s:.2f}x")


if __name__ == "__main__":
    main()
