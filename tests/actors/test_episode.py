"""Two-stage episodes sample from per-request seeds: what a trajectory turns out to be depends
on the run's seed, the weight version, the sample and its group index, not on which worker ran
it or what ran before (the property a resumed run needs to sample as the uninterrupted one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from actors.chat_tokens import ChatTokens
from actors.engine import EngineConfig
from actors.episode import EpisodeConfig, EpisodeRunner, request_seeds
from actors.hf_engine import HFEngine
from core.prompts import PromptTemplates
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from core.trajectory import Trajectory


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[HFEngine]:
    engine = HFEngine(EngineConfig(backend="hf", model=str(tiny_model_dir)))
    yield engine
    engine.shutdown()


def runner(tiny_model_dir: Path, seed: int | None) -> EpisodeRunner:
    config = EpisodeConfig(
        coarse_max_tokens=DEMO_COARSE_TOKENS,
        crop_max_tokens=DEMO_COARSE_TOKENS,
        group_size=2,
        max_new_tokens=10,
        seed=seed,
    )
    chat = ChatTokens(AutoTokenizer.from_pretrained(tiny_model_dir))
    return EpisodeRunner(chat, PromptTemplates.load(), config)


def tokens(trajectories: list[Trajectory]) -> list[list[int]]:
    return [t.token_ids for t in trajectories]


def test_a_sample_samples_alike_alone_or_in_a_batch(engine: HFEngine, tiny_model_dir: Path) -> None:
    first, second = generate(SyntheticConfig(), num=2, seed=9)
    seeded = runner(tiny_model_dir, seed=0)

    together = seeded.run(engine, [first, second])
    alone = seeded.run(engine, [second])

    assert tokens(alone) == tokens(together[2:])
    assert tokens(together[:1]) != tokens(together[1:2])  # each group index has its own seed
    engine.weight_version += 1  # a new version samples afresh
    try:
        assert tokens(seeded.run(engine, [second])) != tokens(alone)
    finally:
        engine.weight_version -= 1


def test_without_a_seed_the_engine_stream_decides(engine: HFEngine, tiny_model_dir: Path) -> None:
    (sample,) = generate(SyntheticConfig(), num=1, seed=9)
    unseeded = runner(tiny_model_dir, seed=None)

    assert tokens(unseeded.run(engine, [sample])) != tokens(unseeded.run(engine, [sample]))


def test_request_seeds_are_stable_and_distinct() -> None:
    requests = [("a", 1, 0), ("a", 2, 0), ("a", 2, 1), ("b", 1, 0)]
    seeds = request_seeds(0, 5, requests)
    assert seeds is not None and len(set(seeds)) == 4
    assert all(0 <= s < 2**31 for s in seeds)
    assert seeds[0] == 50767137  # the same in every process and run (Python's `hash` is salted)
    assert seeds != request_seeds(0, 6, requests) != request_seeds(1, 5, requests)
    assert request_seeds(None, 5, requests) is None
