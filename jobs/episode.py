"""Run two-stage ERGO episodes through a vLLM engine and print them.

    python -m jobs.episode [--model PATH] [--data PATH] [--num-samples N] [--group-size G]

With no arguments it is the embedded demo: it builds the tiny random-weight model and a few
synthetic high-resolution samples under `runs/demo/` (once; later runs reuse them), then runs
one two-stage episode per sample on the local CPU. A random model writes gibberish, so the box
usually falls back; the point is the real pipeline: coarse view -> parse -> crop -> answer.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

from actors.episode import Episode, EpisodeConfig, run_episodes
from actors.vllm_engine import VLLMEngine, VLLMEngineConfig
from core.dataset import iter_samples, write_samples
from core.geometry import QWEN_DEFAULT_MAX_TOKENS, budget_tokens
from core.prompts import DEFAULT_PROMPTS, PromptTemplates
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate

DEMO_DIR = Path("runs/demo")


def ensure_demo_assets(root: Path, num_samples: int) -> tuple[Path, Path]:
    """The tiny model and a small synthetic dataset under `root`, built only if missing."""
    from jobs.make_tiny_model import make_tiny_model

    model = root / "tiny-model"
    if not (model / "model.safetensors").exists():
        make_tiny_model(model, seed=0)
    data = root / "synthetic" / "data.parquet"
    if not data.exists():
        write_samples(data, generate(SyntheticConfig(), num=max(num_samples, 8), seed=0))
    return model, data


def describe(episode: Episode) -> str:
    s = episode.sample
    width, height = episode.original_size
    full = budget_tokens(width, height, QWEN_DEFAULT_MAX_TOKENS)
    lines = [
        f"sample {s.id} (group member {episode.group_index}) image {width}x{height}",
        f"  question: {s.question}",
        f"  options: {list(s.options)}  answer: {s.answer}  gt_box: {s.gt_box}",
        f"  stage 1 (coarse {episode.coarse_image.width}x{episode.coarse_image.height}): "
        f"{episode.stage1.text!r}",
        f"  box: {episode.parsed.box} -> crop {episode.zoom.box}"
        f" (fallback: {episode.zoom.fallback})",
        f"  stage 2 (crop {episode.zoom.image.width}x{episode.zoom.image.height}): "
        f"{episode.stage2.text!r}",
        f"  vision tokens: coarse {episode.coarse_tokens} + crop {episode.zoom.tokens}"
        f" = {episode.vision_tokens} vs {full} for the full image at Qwen's default cap",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub name (default: build the tiny model)")
    parser.add_argument("--data", help="parquet dataset (default: build synthetic samples)")
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="prompt templates TOML")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--coarse-tokens", type=int, default=DEMO_COARSE_TOKENS)
    parser.add_argument("--crop-tokens", type=int, default=DEMO_COARSE_TOKENS)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model, data = args.model, args.data
    if model is None or data is None:
        demo_model, demo_data = ensure_demo_assets(DEMO_DIR, args.num_samples)
        model, data = model or str(demo_model), data or str(demo_data)
    samples = list(itertools.islice(iter_samples(data), args.num_samples))
    engine = VLLMEngine(VLLMEngineConfig(model=str(model), seed=args.seed))
    config = EpisodeConfig(
        coarse_max_tokens=args.coarse_tokens,
        crop_max_tokens=args.crop_tokens,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
    )
    episodes = run_episodes(engine, samples, PromptTemplates.load(args.prompts), config)
    for episode in episodes:
        print(describe(episode))


if __name__ == "__main__":
    main()
