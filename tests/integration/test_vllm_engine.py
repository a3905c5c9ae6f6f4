"""vLLM's CPU build behind the Engine Protocol, checked against transformers on the same weights.

One engine for the module: starting one takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from engine_processes import signal_engine_core
from PIL import Image
from safetensors.torch import load_file
from weight_files import fill

from actors.chat_tokens import ChatTokens
from actors.engine import EngineConfig, Sampling, TokenPrompt
from actors.guarded_engine import EngineDead, GuardedEngine, build_engine
from actors.hf_engine import HFEngine
from actors.vllm_engine import VLLMEngine
from core.geometry import vision_tokens

pytestmark = pytest.mark.integration
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[VLLMEngine]:
    engine = VLLMEngine(
        EngineConfig(model=str(tiny_model_dir), max_model_len=2048, weight_bucket_mb=1)
    )
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(EngineConfig(backend="hf", model=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def two_turn_prompt(tiny_processor) -> TokenPrompt:
    chat = ChatTokens(tiny_processor.tokenizer)
    images = [Image.new("RGB", (224, 168), "red"), Image.new("RGB", (112, 56), "blue")]
    first = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}]
    reply = [*chat.encode("<zoom>[1, 2, 30, 40]</zoom>"), chat.eos_token_id]
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}
    ids = chat.prompt(first) + reply + chat.continuation(first, reply, user)
    return TokenPrompt(ids, images)


def test_two_images_in_a_two_turn_conversation(
    engine: VLLMEngine, two_turn_prompt: TokenPrompt, tiny_processor
) -> None:
    sampling = Sampling(max_tokens=12, temperature=1.0, n=3, seed=7)
    [completions] = engine.generate([two_turn_prompt], sampling)
    assert len(completions) == 3
    for c in completions:
        assert 1 <= len(c.token_ids) <= 12
        assert len(c.logprobs) == len(c.token_ids)
        assert all(math.isfinite(lp) and lp <= 0 for lp in c.logprobs)
    assert len({tuple(c.token_ids) for c in completions}) > 1  # sampled, not copied
    [scored] = engine.score([two_turn_prompt])
    pad = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert scored.token_ids.count(pad) == sum(
        vision_tokens(*im.size) for im in two_turn_prompt.images
    )


def test_per_prompt_seeds_sample_alike_alone_or_in_a_batch(
    engine: VLLMEngine, two_turn_prompt: TokenPrompt, tiny_processor
) -> None:
    chat = ChatTokens(tiny_processor.tokenizer)
    text = TokenPrompt(chat.prompt([{"role": "user", "content": "Name a colour."}]), [])
    sampling = Sampling(max_tokens=12, temperature=1.0, n=2)

    def tokens(prompts: list[TokenPrompt], seeds: list[int]) -> list[list[list[int]]]:
        return [[c.token_ids for c in cs] for cs in engine.generate(prompts, sampling, seeds)]

    together = tokens([text, two_turn_prompt], [21, 22])
    engine.generate([two_turn_prompt], sampling)  # moves the engine's own stream
    assert tokens([two_turn_prompt], [22]) == together[1:]
    assert together[1][0] != together[1][1]  # the n children get seeds 22 and 23
    assert tokens([two_turn_prompt], [23])[0][0] == together[1][1]


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_sampled_logprobs_match_a_transformers_forward_pass(
    engine: VLLMEngine, reference: HFEngine, two_turn_prompt: TokenPrompt
) -> None:
    [[completion]] = engine.generate([two_turn_prompt], Sampling(max_tokens=16, seed=3))
    full = TokenPrompt(two_turn_prompt.token_ids + completion.token_ids, two_turn_prompt.images)
    [scored] = reference.score([full])
    tail = scored.logprobs[-len(completion.token_ids) :]
    assert _max_diff(completion.logprobs, tail) < TOLERANCE


@pytest.fixture(scope="module")
def separate_engine(engine: VLLMEngine, tiny_model_dir: Path) -> Iterator[VLLMEngine]:
    """An engine whose core runs in its own process (the GPU default): weights go by file."""
    other = VLLMEngine(
        EngineConfig(
            model=str(tiny_model_dir), max_model_len=2048, weight_bucket_mb=1, engine_process=True
        )
    )
    yield other
    other.shutdown()


@pytest.mark.parametrize("source", ["tensors", "shared file"])
@pytest.mark.parametrize("where", ["in_process", "separate"])
def test_weight_update_is_served(
    where: str,
    source: str,
    request: pytest.FixtureRequest,
    reference: HFEngine,
    two_turn_prompt: TokenPrompt,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    """Tensors (from the object store) or the learner's shared file (a checkpoint that the
    engine's workers load as it is), into an engine core in this process or in its own."""
    engine = request.getfixturevalue("engine" if where == "in_process" else "separate_engine")
    assert engine.in_process == (where == "in_process")
    reference.update_weights(0, load_file(tiny_model_dir / "model.safetensors").items())
    original = load_file(tiny_model_dir / "model.safetensors")
    [before] = engine.score([two_turn_prompt])
    assert _max_diff(before.logprobs, reference.score([two_turn_prompt])[0].logprobs) < TOLERANCE

    generator = torch.Generator().manual_seed(0)
    perturbed = {
        n: t + 0.05 * torch.randn(t.shape, generator=generator) for n, t in original.items()
    }
    if source == "tensors":
        engine.update_weights(1, perturbed.items())  # separate: 1 MB buckets, several trips
    else:
        engine.update_weights(1, fill(tmp_path / "weights", perturbed))
    reference.update_weights(1, perturbed.items())
    [after] = engine.score([two_turn_prompt])
    [expected] = reference.score([two_turn_prompt])
    assert engine.weight_version == 1
    assert _max_diff(after.logprobs, expected.logprobs) < TOLERANCE
    assert _max_diff(after.logprobs, before.logprobs) > 100 * TOLERANCE

    engine.update_weights(2, original.items())
    [restored] = engine.score([two_turn_prompt])
    assert _max_diff(restored.logprobs, before.logprobs) < TOLERANCE


def _long_prompts(count: int, length: int) -> list[TokenPrompt]:
    return [TokenPrompt([10 + (i * 7 + j) % 400 for i in range(length)]) for j in range(count)]


def test_a_seeded_batch_larger_than_one_step_is_prefilled_whole(engine: VLLMEngine) -> None:
    """Regression: 8 seeded 900-token prompts x 2 samples exceed one step's 4096 tokens. With
    chunked prefill the scheduler split a prompt and the CPU engine died (`CPU Generator does
    not use offset`); off (the CPU default), prompts wait for a step they fit in whole."""
    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    assert not scheduler.enable_chunked_prefill
    prompts = _long_prompts(8, 900)
    assert scheduler.max_num_batched_tokens < 8 * 900
    sampling = Sampling(max_tokens=6, temperature=1.0, n=2)
    together = engine.generate(prompts, sampling, seeds=list(range(100, 108)))
    assert all(len(c.token_ids) == 6 for cs in together for c in cs)
    [alone] = engine.generate(prompts[5:6], sampling, seeds=[105])
    assert [c.token_ids for c in alone] == [c.token_ids for c in together[5]]


def test_an_engine_whose_step_fails_is_dead_and_says_so(tiny_model_dir: Path) -> None:
    """A real failure of the in-process engine: chunked prefill turned back on, with seeds, is
    the vLLM CPU fault above. The guard reports it, and nothing reaches the engine again."""
    config = EngineConfig(
        model=str(tiny_model_dir),
        max_model_len=1024,
        chunked_prefill=True,
        max_num_batched_tokens=256,
        request_timeout_s=120,
    )
    guard = build_engine(config)
    assert guard.health()["weight_version"] == 0
    with pytest.raises(EngineDead, match="CPU Generator does not use offset"):
        guard.generate(_long_prompts(4, 600), Sampling(max_tokens=4), seeds=[1, 2, 3, 4])
    with pytest.raises(EngineDead, match="the engine is dead"):
        guard.health()
    guard.shutdown()


def test_a_stopped_engine_core_ends_the_call_at_its_deadline(
    separate_engine: VLLMEngine, two_turn_prompt: TokenPrompt
) -> None:
    """A hung engine for real: its core process is SIGSTOPped mid-life (then SIGKILLed)."""
    guard = GuardedEngine(separate_engine, timeout_s=5)
    assert guard.health()["probe_s"] < 5
    core = signal_engine_core(os.getpid(), signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(EngineDead, match=r"stuck \(no answer within 5 s\)"):
            guard.generate([two_turn_prompt], Sampling(max_tokens=4))
        assert time.monotonic() - start < 15
        with pytest.raises(EngineDead):
            guard.health()
    finally:
        core.kill()
