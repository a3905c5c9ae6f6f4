"""Benchmark: rollout throughput of the vLLM pool vs a sequential transformers loop and vs raw
vLLM, in one run.

    python bench/rollout.py [--samples 32] [--group-size 4] [--max-new-tokens 64] [--workers 1]

All three run the same two-stage episodes (`EpisodeRunner`, the same per-request seeds) on the
same tiny model and the same synthetic samples:
- transformers, sample by sample (G return sequences each): the baseline;
- raw vLLM: one in-process vLLM CPU engine in this process, every sample in one call (what the
  pool's worker does, without Ray);
- the pool: Ray actors hosting vLLM CPU engines.
Engine start-up and one warm-up are excluded from each: one sample for the sample-by-sample
loop, the whole batch once for each vLLM run (a batch's first run compiles kernels for its
shapes, once per process). Prints trajectories/s, policy tokens/s and the pool's ratios
(project targets: >= 5x the sequential loop, >= 0.8x raw vLLM).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
from transformers import AutoTokenizer

from actors.chat_tokens import ChatTokens
from actors.engine import EngineConfig
from actors.episode import EpisodeConfig, EpisodeRunner
from actors.hf_engine import HFEngine
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig
from actors.vllm_engine import VLLMEngine
from core.prompts import PromptTemplates
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from core.trajectory import Trajectory
from jobs.make_tiny_model import make_tiny_model
from jobs.rollout import RolloutConfig, make_rollout_pool


def rates(trajectories: list[Trajectory], seconds: float) -> tuple[float, float]:
    tokens = sum(t.num_policy_tokens for t in trajectories)
    return len(trajectories) / seconds, tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, help="samples per request (default: all at once)")
    args = parser.parse_args()
    episode = EpisodeConfig(
        coarse_max_tokens=DEMO_COARSE_TOKENS,
        crop_max_tokens=DEMO_COARSE_TOKENS,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
    )
    samples = list(generate(SyntheticConfig(), num=args.samples, seed=0))
    with tempfile.TemporaryDirectory() as folder:
        model = str(make_tiny_model(Path(folder) / "tiny", seed=0))

        hf = HFEngine(EngineConfig(backend="hf", model=model))
        runner = EpisodeRunner(
            ChatTokens(AutoTokenizer.from_pretrained(model)), PromptTemplates.load(), episode
        )
        runner.run(hf, samples[:1])  # warm-up, untimed, as for the others
        start = time.perf_counter()
        baseline = [t for s in samples for t in runner.run(hf, [s])]  # one sample at a time
        base_s = time.perf_counter() - start

        raw = VLLMEngine(EngineConfig(model=model, max_model_len=2048))
        runner.run(raw, samples)  # warm-up: the batch's shapes once, untimed (as for the pool)
        start = time.perf_counter()
        direct = runner.run(raw, samples)
        raw_s = time.perf_counter() - start
        raw.shutdown()

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        pool = make_rollout_pool(
            RolloutConfig(
                engine=EngineConfig(model=model, max_model_len=2048),
                episode=episode,
                pool=PoolConfig(
                    min_workers=args.workers,
                    max_workers=args.workers,
                    chunk_size=args.chunk_size or -(-args.samples // args.workers),
                ),
                resources=WorkerResources(num_cpus=0.5),
            )
        )
        pool.wait_ready()
        pool.run(samples)  # warm-up: the first batch pays one-off costs
        start = time.perf_counter()
        pooled = pool.run(samples)
        pool_s = time.perf_counter() - start
        pool.shutdown()
        ray.shutdown()

    print(f"{args.samples} samples x G={args.group_size}, <= {args.max_new_tokens} tokens a turn")
    report("transformers, sequential", baseline, base_s)
    report("raw vLLM, in-process", direct, raw_s)
    report(f"vLLM pool, {args.workers} worker(s)", pooled, pool_s)
    failed = sum(t.failure is not None for t in pooled)
    print(f"failed trajectories in the pool run: {failed} of {len(pooled)}")
    (base_traj, base_tok), (pool_traj, pool_tok) = rates(baseline, base_s), rates(pooled, pool_s)
    raw_traj, raw_tok = rates(direct, raw_s)
    print(f"pool / sequential: {pool_traj / base_traj:.1f}x trajectories/s, ", end="")
    print(f"{pool_tok / base_tok:.1f}x tokens/s (target >= 5x)")
    print(f"pool / raw vLLM: {pool_traj / raw_traj:.2f}x trajectories/s, ", end="")
    print(f"{pool_tok / raw_tok:.2f}x tokens/s (target >= 0.8x)")


def report(name: str, trajectories: list[Trajectory], seconds: float) -> None:
    per_s, tokens_per_s = rates(trajectories, seconds)
    print(f"{name:28s} {seconds:7.1f} s {per_s:7.2f} traj/s {tokens_per_s:8.0f} tokens/s")


if __name__ == "__main__":
    main()
