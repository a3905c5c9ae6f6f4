"""HFEngine on the tiny random Qwen2.5-VL: sampling, scoring, and weight updates on CPU.

The central property: the logprobs an engine reports for its samples are the ones a plain
forward pass over prompt + completion gives, which is what the learner's ratios assume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from weight_files import fill

from actors.engine import Completion, EngineConfig, Sampling, TokenPrompt
from actors.hf_engine import HFEngine

IMAGE_PAD = "<|image_pad|>"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[HFEngine]:
    engine = HFEngine(EngineConfig(backend="hf", model=str(tiny_model_dir)))
    yield engine
    engine.shutdown()


@pytest.fixture
def fresh_engine(tiny_model_dir: Path) -> HFEngine:
    """An engine of its own for tests that change weights."""
    return HFEngine(EngineConfig(backend="hf", model=str(tiny_model_dir)))


def chat_ids(processor: Any, messages: list[dict[str, Any]]) -> list[int]:
    text = processor.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = torch.randint(
        0, 256, (height, width, 3), generator=torch.Generator().manual_seed(seed)
    )
    return Image.fromarray(pixels.to(torch.uint8).numpy(), mode="RGB")


def image_prompt(processor: Any, width: int = 112, height: int = 84) -> TokenPrompt:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}
    ]
    return TokenPrompt(chat_ids(processor, messages), [image(width, height)])


def two_image_prompt(processor: Any) -> TokenPrompt:
    """A two-turn conversation: a coarse view, the model's zoom, then the crop."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which letter?"}]},
        {"role": "assistant", "content": "<zoom>[12, 40, 96, 120]</zoom>"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Here it is."}]},
    ]
    return TokenPrompt(chat_ids(processor, messages), [image(112, 84, 1), image(56, 112, 2)])


def text_prompt(processor: Any) -> TokenPrompt:
    return TokenPrompt(chat_ids(processor, [{"role": "user", "content": "Answer: A."}]))


def eos_id(engine: HFEngine) -> int:
    (eos,) = engine.eos_ids
    return eos


def assert_logprobs_match_score(
    engine: HFEngine, prompt: TokenPrompt, completions: list[Completion]
) -> int:
    """Compare each completion's logprobs with `score` of prompt + completion; returns how many
    were comparable (a random model may sample `<|image_pad|>`, which no prompt may hold)."""
    compared = 0
    for completion in completions:
        if engine.image_token_id in completion.token_ids:
            continue
        full = TokenPrompt(prompt.token_ids + completion.token_ids, prompt.images)
        (scored,) = engine.score([full])
        n = len(completion.token_ids)
        assert scored.token_ids[-n:] == completion.token_ids
        diffs = [abs(a - b) for a, b in zip(scored.logprobs[-n:], completion.logprobs, strict=True)]
        assert max(diffs) < 1e-4
        compared += 1
    return compared


def test_generate_returns_n_completions_per_prompt_in_order(
    engine: HFEngine, tiny_processor: Any
) -> None:
    prompts = [image_prompt(tiny_processor), text_prompt(tiny_processor)]
    sampling = Sampling(max_tokens=16, temperature=1.0, n=3, seed=0)

    outputs = engine.generate(prompts, sampling)

    assert [len(cs) for cs in outputs] == [3, 3]
    for completions in outputs:
        for c in completions:
            assert 1 <= len(c.token_ids) <= 16
            assert len(c.logprobs) == len(c.token_ids)
            assert all(math.isfinite(lp) and lp <= 0 for lp in c.logprobs)
            assert c.finish_reason in ("stop", "length")
    # Order: each prompt's completions score as continuations of that prompt, not the other.
    for prompt, completions in zip(prompts, outputs, strict=True):
        assert assert_logprobs_match_score(engine, prompt, completions) > 0


def test_finish_reasons_stop_at_eos_and_strip_padding(
    engine: HFEngine, tiny_processor: Any
) -> None:
    # A hot temperature makes the random model's eos likely enough that some of 16 samples stop.
    sampling = Sampling(max_tokens=100, temperature=3.0, n=16, seed=1)

    (completions,) = engine.generate([text_prompt(tiny_processor)], sampling)

    eos = eos_id(engine)
    reasons = {c.finish_reason for c in completions}
    assert reasons == {"stop", "length"}
    for c in completions:
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
        else:
            assert len(c.token_ids) == 100 and eos not in c.token_ids
    assert assert_logprobs_match_score(engine, text_prompt(tiny_processor), completions) >= 8


def test_same_seed_reproduces_the_same_tokens(engine: HFEngine, tiny_processor: Any) -> None:
    prompts = [image_prompt(tiny_processor), text_prompt(tiny_processor)]

    def tokens(seed: int | None) -> list[list[list[int]]]:
        sampling = Sampling(max_tokens=12, temperature=1.0, n=2, seed=seed)
        return [[c.token_ids for c in cs] for cs in engine.generate(prompts, sampling)]

    assert tokens(7) == tokens(7)
    assert tokens(7) != tokens(8)
    assert tokens(None) != tokens(None)


def test_per_prompt_seeds_sample_alike_whatever_runs_beside_them(
    engine: HFEngine, tiny_processor: Any
) -> None:
    a, b = image_prompt(tiny_processor), text_prompt(tiny_processor)
    sampling = Sampling(max_tokens=12, temperature=1.0, n=2)

    def tokens(prompts: list[TokenPrompt], seeds: list[int]) -> list[list[list[int]]]:
        return [[c.token_ids for c in cs] for cs in engine.generate(prompts, sampling, seeds)]

    together = tokens([a, b], [11, 12])
    engine.generate([b], sampling)  # moves the engine's own stream
    assert tokens([b], [12]) == together[1:]
    assert tokens([b, a], [12, 11]) == together[::-1]
    assert tokens([b], [13]) != together[1:]
    with pytest.raises(ValueError, match="1 seeds for 2 prompts"):
        engine.generate([a, b], sampling, [1])


def test_greedy_gives_n_identical_completions(engine: HFEngine, tiny_processor: Any) -> None:
    prompt = image_prompt(tiny_processor)

    (first,) = engine.generate([prompt], Sampling(max_tokens=10, temperature=0, n=3))
    (again,) = engine.generate([prompt], Sampling(max_tokens=10, temperature=0, n=1))

    assert len(first) == 3
    assert first[0] == first[1] == first[2] == again[0]
    assert assert_logprobs_match_score(engine, prompt, first[:1]) == 1


@pytest.mark.parametrize(("temperature", "top_p"), [(0.0, 1.0), (1.0, 1.0), (0.7, 0.8), (2.0, 1.0)])
def test_generate_logprobs_equal_forward_pass_logprobs(
    engine: HFEngine, tiny_processor: Any, temperature: float, top_p: float
) -> None:
    """Logprobs come from the raw logits, whatever temperature and top-p sampled with."""
    prompt = image_prompt(tiny_processor)
    sampling = Sampling(max_tokens=24, temperature=temperature, top_p=top_p, n=4, seed=3)

    (completions,) = engine.generate([prompt], sampling)

    assert assert_logprobs_match_score(engine, prompt, completions) >= 2


@pytest.mark.parametrize(("width", "height", "tokens"), [(112, 84, 12), (56, 56, 4), (280, 84, 30)])
def test_score_expands_each_image_to_its_grid_tokens(
    engine: HFEngine, tiny_processor: Any, width: int, height: int, tokens: int
) -> None:
    prompt = image_prompt(tiny_processor, width, height)

    (scored,) = engine.score([prompt])

    assert scored.token_ids.count(engine.image_token_id) == tokens
    assert len(scored.token_ids) == len(prompt.token_ids) - 1 + tokens
    assert len(scored.logprobs) == len(scored.token_ids) - 1
    assert all(math.isfinite(lp) and lp <= 0 for lp in scored.logprobs)


def test_two_image_conversation_generates_and_scores(engine: HFEngine, tiny_processor: Any) -> None:
    prompt = two_image_prompt(tiny_processor)
    assert prompt.token_ids.count(engine.image_token_id) == 2

    (scored,) = engine.score([prompt])
    (completions,) = engine.generate([prompt], Sampling(max_tokens=16, n=3, seed=5))

    assert scored.token_ids.count(engine.image_token_id) == 12 + 8
    assert len(scored.logprobs) == len(prompt.token_ids) - 2 + 20 - 1
    assert assert_logprobs_match_score(engine, prompt, completions) >= 2


def test_score_rejects_placeholders_without_images(engine: HFEngine, tiny_processor: Any) -> None:
    prompt = image_prompt(tiny_processor)

    with pytest.raises(ValueError, match="placeholders"):
        engine.score([TokenPrompt(prompt.token_ids)])


def test_update_weights_changes_logprobs_and_restores_exactly(
    fresh_engine: HFEngine, tiny_model_dir: Path, tiny_processor: Any
) -> None:
    prompt = two_image_prompt(tiny_processor)
    original = load_file(tiny_model_dir / "model.safetensors")
    assert "lm_head.weight" not in original  # tied: it must follow the embeddings
    torch.manual_seed(0)
    perturbed = {name: t + 0.05 * torch.randn_like(t) for name, t in original.items()}
    (before,) = fresh_engine.score([prompt])

    fresh_engine.update_weights(1, ((name, t) for name, t in perturbed.items()))
    (changed,) = fresh_engine.score([prompt])
    lm_head = fresh_engine.model.lm_head.weight
    fresh_engine.update_weights(2, original.items())
    (restored,) = fresh_engine.score([prompt])

    assert max(abs(a - b) for a, b in zip(before.logprobs, changed.logprobs, strict=True)) > 1e-3
    assert torch.equal(lm_head, fresh_engine.model.get_input_embeddings().weight)
    assert restored.logprobs == before.logprobs
    assert fresh_engine.weight_version == 2


def test_update_weights_loads_a_shared_file_of_checkpoint_names(
    fresh_engine: HFEngine, tiny_processor: Any, tmp_path: Path
) -> None:
    prompt = text_prompt(tiny_processor)
    (before,) = fresh_engine.score([prompt])
    norm = fresh_engine.model.get_parameter("model.language_model.norm.weight")

    fresh_engine.update_weights(5, fill(tmp_path / "w", {"model.norm.weight": norm + 1.0}))
    (after,) = fresh_engine.score([prompt])

    assert torch.equal(norm, torch.full_like(norm, 2.0))  # the tiny model's norms start at 1
    assert after.logprobs != before.logprobs
    assert fresh_engine.weight_version == 5


def test_update_weights_rejects_unknown_names_and_wrong_shapes(fresh_engine: HFEngine) -> None:
    with pytest.raises(KeyError, match=r"model\.layers\.99"):
        fresh_engine.update_weights(1, [("model.layers.99.mlp.up_proj.weight", torch.zeros(2))])
    with pytest.raises(KeyError, match="language_model"):  # in-memory names are not checkpoints
        fresh_engine.update_weights(1, [("model.language_model.norm.weight", torch.zeros(4))])
    with pytest.raises(ValueError, match="shape"):
        fresh_engine.update_weights(1, [("model.norm.weight", torch.zeros(3))])
    assert fresh_engine.weight_version == 0


def test_score_uses_3d_image_positions_like_the_processor(engine: HFEngine, tiny_processor) -> None:
    """Regression: without mm_token_type_ids transformers silently uses 1-D positions."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = tiny_processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.effect_noise((112, 56), 60).convert("RGB")
    inputs = tiny_processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        logits = engine.model(**inputs).logits[0, :-1].float()
    expected = torch.log_softmax(logits, -1).gather(-1, inputs["input_ids"][0, 1:, None])[:, 0]
    ids = tiny_processor.tokenizer.encode(text)
    [scored] = engine.score([TokenPrompt(ids, [image])])
    assert scored.token_ids == inputs["input_ids"][0].tolist()
    assert torch.allclose(torch.tensor(scored.logprobs), expected, atol=1e-5)


def test_banned_tokens_are_never_sampled(engine: HFEngine, tiny_processor) -> None:
    ids = tiny_processor.tokenizer.encode("Where is it?")
    banned = tuple(range(0, len(tiny_processor.tokenizer), 2))  # every even id
    sampling = Sampling(max_tokens=32, temperature=1.5, n=4, seed=5, banned_token_ids=banned)
    [completions] = engine.generate([TokenPrompt(ids)], sampling)
    sampled = {t for c in completions for t in c.token_ids}
    assert sampled and not sampled & set(banned)
