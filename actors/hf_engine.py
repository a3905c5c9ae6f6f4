"""A transformers engine behind the `Engine` Protocol: for machines without vLLM, and the reference
that tests hold other engines to.

Prompts arrive as token ids with one `<|image_pad|>` per image; the engine runs only the image
processor (images are already on the 28-px grid), expands each placeholder to its vision tokens
and never re-tokenizes text. Sampled logprobs come from the raw logits, before temperature and
top-p, so they equal what `score` computes for the same tokens with one forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

from actors.engine import (
    Completion,
    EngineConfig,
    Sampling,
    Scored,
    TokenPrompt,
    Weights,
    check_seeds,
    set_cpu_threads,
)
from core.model_inputs import model_inputs
from core.shared_weights import SharedWeights
from core.weight_names import to_checkpoint_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ModelInputs:
    """One prompt as the model sees it: expanded ids plus the processed images."""

    token_ids: list[int]
    tensors: dict[str, torch.Tensor]


class HFEngine:
    """A `Qwen2_5_VLForConditionalGeneration` in this process, one prompt at a time."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        set_cpu_threads(config)
        self.processor = AutoProcessor.from_pretrained(config.model)
        # Any: transformers' decorated `to` does not type-check as a bound method.
        self.model: Any = cast(
            Any,
            AutoModelForImageTextToText.from_pretrained(
                config.model, dtype=getattr(torch, config.dtype)
            ),
        )
        self.model.to(self.device).eval()
        # Weights arrive under checkpoint names. remove_duplicate=False keeps a tied
        # `lm_head.weight` (it aliases the embeddings, and checkpoints leave it out).
        self.checkpoint_params = {
            to_checkpoint_name(name): param
            for name, param in self.model.named_parameters(remove_duplicate=False)
        }
        self.image_token_id: int = self.model.config.image_token_id
        self.eos_ids = _eos_ids(self.model.generation_config.eos_token_id)
        # A checkpoint's sampling defaults (Qwen's top_k, repetition penalty) would fill every
        # setting a call leaves unset and bend the sampled distribution away from the model's.
        self.model.generation_config = GenerationConfig(
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.model.generation_config.pad_token_id,
        )
        self.rng = torch.Generator().manual_seed(config.seed)
        self.weight_version = 0
        logger.info("HF engine: %s (%s on %s)", config.model, config.dtype, config.device)

    def shutdown(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def prepare(self, prompt: TokenPrompt) -> _ModelInputs:
        """Expand the image placeholders and build the model's input tensors."""
        inputs = model_inputs(
            [(prompt.token_ids, prompt.images)],
            self.processor.image_processor,
            self.image_token_id,
            pad_token_id=0,  # one row: never padded
        )
        tensors = {k: v.to(self.device) for k, v in inputs.tensors.items()}
        if "pixel_values" in tensors:
            tensors["pixel_values"] = tensors["pixel_values"].to(self.model.dtype)
        return _ModelInputs(token_ids=inputs.token_ids[0], tensors=tensors)

    @torch.no_grad()
    def score(self, prompts: list[TokenPrompt]) -> list[Scored]:
        """One forward pass per prompt; logprob of each token given everything before it."""
        scored = []
        for prompt in prompts:
            inputs = self.prepare(prompt)
            logits_LV = self.model(**inputs.tensors).logits[0, :-1]
            logprobs_LV = torch.log_softmax(logits_LV.float(), dim=-1)
            targets_L = inputs.tensors["input_ids"][0, 1:]
            logprobs_L = logprobs_LV.gather(-1, targets_L[:, None])[:, 0]
            scored.append(Scored(token_ids=inputs.token_ids, logprobs=logprobs_L.tolist()))
        return scored

    @torch.no_grad()
    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order; temperature 0 is greedy. With
        `seeds`, prompt i's n completions come from a generator seeded `seeds[i]`."""
        check_seeds(prompts, seeds)
        seed = sampling.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.rng))
        cuda = [self.device] if self.device.type == "cuda" else []
        out = []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            for i, prompt in enumerate(prompts):
                if seeds is not None:
                    torch.manual_seed(seeds[i])
                out.append(self._generate_one(prompt, sampling))
        return out

    def _generation_config(self, sampling: Sampling) -> GenerationConfig:
        """The call's settings; top_k=0 turns off transformers' default top-k of 50."""
        greedy = sampling.temperature == 0
        return GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            temperature=1.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=None if greedy else 0,
            num_return_sequences=1 if greedy else sampling.n,
            suppress_tokens=list(sampling.banned_token_ids) or None,
            output_logits=True,
            return_dict_in_generate=True,
        )

    def _generate_one(self, prompt: TokenPrompt, sampling: Sampling) -> list[Completion]:
        inputs = self.prepare(prompt)
        out = self.model.generate(
            **inputs.tensors, generation_config=self._generation_config(sampling)
        )
        new_SN = out.sequences[:, len(inputs.token_ids) :]
        logprobs_SNV = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        token_logprobs_SN = logprobs_SNV.gather(-1, new_SN[..., None])[..., 0]
        completions = [
            self._completion(ids.tolist(), lps.tolist())
            for ids, lps in zip(new_SN, token_logprobs_SN, strict=True)
        ]
        if sampling.temperature == 0:  # greedy samples are identical; generate once
            first = completions[0]
            completions = [
                Completion(list(first.token_ids), list(first.logprobs), first.finish_reason)
                for _ in range(sampling.n)
            ]
        return completions

    def _completion(self, token_ids: list[int], logprobs: list[float]) -> Completion:
        """Cut a generated row after its first eos; what follows is padding."""
        for i, token in enumerate(token_ids):
            if token in self.eos_ids:
                return Completion(token_ids[: i + 1], logprobs[: i + 1], finish_reason="stop")
        return Completion(token_ids, logprobs, finish_reason="length")

    @torch.no_grad()
    def update_weights(self, version: int, weights: Weights) -> None:
        """Copy tensors (checkpoint names) into the parameters in place."""
        named = weights.tensors() if isinstance(weights, SharedWeights) else weights
        count = 0
        for name, tensor in named:
            param = self.checkpoint_params.get(name)
            if param is None:
                raise KeyError(f"unknown parameter {name!r}")
            if param.shape != tensor.shape:
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {tuple(param.shape)}")
            param.copy_(tensor)
            count += 1
        self.weight_version = version
        logger.info("weights version %d loaded (%d tensors)", version, count)


def _eos_ids(eos: int | list[int] | None) -> set[int]:
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list) else {eos}
