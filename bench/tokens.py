"""Benchmark: vision tokens and latency of two-stage (ERGO) vs single-stage at full resolution.

    python bench/tokens.py [--samples 16] [--coarse-tokens 256] [--crop-tokens 256]
                           [--full-tokens 16384] [--max-new-tokens 32] [--threads 1]
                           [--model DIR]

Both modes run the same synthetic 2048x1536 samples, one sample per engine call (as the eval
job and the paper measure latency), greedy, on one in-process vLLM engine (default: the tiny
random-weight model, its position table widened so that a full-resolution image fits). The
modes alternate sample by sample, so load on the machine falls on both alike; engine start-up
and one warm-up sample per mode are excluded. Prints mean vision tokens (coarse, crop, total)
and latency per sample for each mode, and two-stage / single-stage ratios against the target
(the paper: ~23% of the tokens, ~3x faster; ours: tokens <= 30%, latency <= 0.5x).
Latency is the engine time of the sample's turns (what `jobs.eval` reports); "end to end"
adds decoding the PNG, resizing and cropping in this process. The engine computes on one
thread by default: on a shared 2-core machine a second OpenMP thread that is descheduled stalls
every decoding step (measured here under load: ~100 ms a token with 2 threads, ~3 ms with 1),
which would measure the neighbours rather than the method.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from actors.rollout_worker import EpisodeRequest, RolloutWorker
from core.synthetic import SyntheticConfig, generate
from jobs.eval import required_model_len
from jobs.eval_report import EvalRecord, record_from_trajectory, summarize
from jobs.make_tiny_model import make_tiny_model
from rewards.answer import AccuracyConfig

TOKEN_TARGET, LATENCY_TARGET = 0.30, 0.5


def tiny_model_with_positions(folder: Path, positions: int) -> Path:
    """The tiny model, its text position table widened to `positions` (4096 cannot hold a
    2048x1536 image's 4,015 tokens plus the prompt; Qwen2.5-VL-7B has 128,000)."""
    model = make_tiny_model(folder, seed=0)
    file = model / "config.json"
    config = json.loads(file.read_text())
    config["text_config"]["max_position_embeddings"] = positions
    file.write_text(json.dumps(config, indent=2))
    return model


def measure(
    worker: RolloutWorker, samples: list[Any], episodes: list[EpisodeConfig]
) -> dict[str, tuple[list[EvalRecord], list[float]]]:
    """Per mode: each sample's record and its end-to-end seconds; modes alternate."""
    out: dict[str, tuple[list[EvalRecord], list[float]]] = {e.mode: ([], []) for e in episodes}
    for sample in samples:
        for episode in episodes:
            start = time.perf_counter()
            [trajectory] = worker.run([EpisodeRequest(sample, episode)])
            seconds = time.perf_counter() - start
            records, walls = out[episode.mode]
            records.append(record_from_trajectory(trajectory, AccuracyConfig()))
            walls.append(seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--coarse-tokens", type=int, default=256, help="two-stage coarse cap")
    parser.add_argument("--crop-tokens", type=int, default=256, help="two-stage crop cap")
    parser.add_argument("--full-tokens", type=int, default=16384, help="single-stage cap")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="per turn")
    parser.add_argument("--threads", type=int, default=1, help="engine torch threads")
    parser.add_argument("--model", help="model folder (default: the tiny model)")
    args = parser.parse_args()
    common = {"group_size": 1, "temperature": 0.0, "max_new_tokens": args.max_new_tokens}
    two = EpisodeConfig(
        coarse_max_tokens=args.coarse_tokens, crop_max_tokens=args.crop_tokens, **common
    )
    one = EpisodeConfig(mode="single-stage", coarse_max_tokens=args.full_tokens, **common)
    samples = list(generate(SyntheticConfig(), num=args.samples + 1, seed=0))
    with tempfile.TemporaryDirectory() as folder:
        length = required_model_len([two, one])
        model = args.model or str(tiny_model_with_positions(Path(folder) / "tiny", 2 * length))
        engine = EngineConfig(model=model, max_model_len=length, cpu_threads=args.threads)
        worker = RolloutWorker(engine)
        measure(worker, samples[:1], [two, one])  # warm-up: the first calls pay one-off costs
        results = measure(worker, samples[1:], [two, one])
        worker.shutdown()
    report(args, results)


def report(
    args: argparse.Namespace, results: dict[str, tuple[list[EvalRecord], list[float]]]
) -> None:
    """The table and the ratios against the target."""
    print(
        f"{args.samples} synthetic samples (2048x1536), one per engine call, greedy, "
        f"<= {args.max_new_tokens} new tokens a turn, {args.threads} engine thread(s)"
    )
    print(
        f"{'mode':34s} {'coarse':>7s} {'crop':>6s} {'total':>6s} "
        f"{'latency':>8s} {'p50':>7s} {'p95':>7s} {'end2end':>8s} {'failed':>6s}"
    )
    summaries = {}
    for mode, (records, walls) in results.items():
        cap = args.full_tokens if mode == "single-stage" else args.coarse_tokens
        s = summarize(records, {"mode": mode, "max_vision_tokens": cap})
        summaries[mode] = s
        t, lat = s["vision_tokens"], s["latency_s"]
        name = f"{mode} (cap {cap}" + (
            f", crop {args.crop_tokens})" if mode == "two-stage" else ")"
        )
        print(
            f"{name:34s} {t['coarse']:7.0f} {t['crop']:6.0f} {t['total']:6.0f} "
            f"{lat['mean']:7.3f}s {lat['p50']:6.3f}s {lat['p95']:6.3f}s "
            f"{sum(walls) / len(walls):7.3f}s {s['failed']:6d}"
        )
    two, one = summaries["two-stage"], summaries["single-stage"]
    tokens = two["vision_tokens"]["total"] / one["vision_tokens"]["total"]
    latency = two["latency_s"]["mean"] / one["latency_s"]["mean"]
    walls = [sum(w) / len(w) for _, w in (results["two-stage"], results["single-stage"])]
    print(
        f"two-stage / single-stage: vision tokens {tokens:.1%} (target <= {TOKEN_TARGET:.0%}: "
        f"{'met' if tokens <= TOKEN_TARGET else 'NOT met'}), latency {latency:.2f}x "
        f"({1 / latency:.1f}x faster; target <= {LATENCY_TARGET}x: "
        f"{'met' if latency <= LATENCY_TARGET else 'NOT met'}), end to end "
        f"{walls[0] / walls[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
