"""The generation-engine interface every rollout backend implements.

Engines work on token ids, not text, so that what the learner trains on is exactly what was
sampled: a prompt is a list of token ids in which each image is ONE `<|image_pad|>` token
(the engine expands it to the image's vision tokens) plus the images in order. Images arrive
already resized to the 28-px grid by `core.geometry`.

Two implementations: `actors.vllm_engine.VLLMEngine` (rollouts; `vllm` on GPUs, the CPU build
here) and `actors.hf_engine.HFEngine` (transformers; for machines without vLLM, and the
reference in tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from core.shared_weights import SharedWeights

Weights = SharedWeights | Iterable[tuple[str, torch.Tensor]]
"""New policy weights under checkpoint names: the learner's shared-memory file, or tensors."""


class EngineConfig(BaseModel):
    """Which engine a worker hosts and how it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["vllm", "hf"] = "vllm"
    """`vllm` for rollouts; `hf` (transformers) where vLLM is not installed."""
    model: str = Field(min_length=1)
    """Model folder or hub name."""
    dtype: str = "float32"
    """Weights and compute dtype (`bfloat16` on GPUs)."""
    device: str = "cpu"
    """transformers backend: the torch device (vLLM places itself)."""
    max_model_len: int = Field(4096, ge=256)
    """vLLM: longest sequence (both turns with both images)."""
    max_images_per_prompt: int = Field(2, ge=1)
    """vLLM: images one prompt may hold (coarse view + crop)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM: GPUs one engine spans (a 72B verifier needs several); give its actor as many."""
    max_num_seqs: int = Field(128, ge=1)
    """vLLM: sequences scheduled together."""
    enable_prefix_caching: bool = True
    """vLLM: reuse stage 1's KV for stage 2, whose prompt extends it token for token."""
    enforce_eager: bool = True
    """vLLM: no graph capture; starts in seconds rather than minutes on CPU."""
    kv_cache_gib: int = Field(1, ge=1)
    """vLLM on CPU: host memory reserved for the KV cache."""
    memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    """vLLM: share of GPU memory (host memory on CPU) it may take; default 0.85 GPU, 0.1 CPU."""
    weight_bucket_mb: int = Field(256, ge=1)
    """Size of one weight-transfer bucket (arrays from the object store into an engine core in
    its own process; the shared-memory file is loaded whole)."""
    cpu_omp_bind: str = "nobind"
    """vLLM on CPU: thread pinning. Its `auto` computes on one core per NUMA node and pins every
    engine to the same core; `nobind` leaves placement to the OS; `0-7` pins explicitly."""
    cpu_threads: int | None = Field(None, ge=1)
    """Torch threads for a CPU engine's forward pass. Default: every core of the host, because
    Ray gives an actor with a fractional CPU one thread (OMP_NUM_THREADS=1)."""
    engine_process: bool | None = None
    """vLLM: run the engine core in its own process. Default: yes on GPUs (scheduling overlaps
    the forward pass), no on CPU, where the two processes fight over the same few cores
    (measured here: a rollout batch took 1.9x as long with the separate process)."""
    seed: int = 0
    """Engine sampling seed."""
    chunked_prefill: bool | None = None
    """vLLM: split long prefills across engine steps. Default: on GPUs; off on CPU, where vLLM
    cannot rewind a per-request (seeded) generator after a partial prefill: the engine dies with
    `CPU Generator does not use offset`. Off, every prompt is prefilled whole in one step."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """vLLM: tokens one engine step may hold. Default: vLLM's (4096 on CPU), and at least
    `max_model_len` without chunked prefill (it may not be less: a prompt must fit one step)."""
    request_timeout_s: float = Field(300.0, gt=0.0)
    """Longest one engine call (a batch's generate, a weight load) may take. Past it the engine
    counts as stuck: the call fails and the worker reports itself dead, to be replaced."""


def set_cpu_threads(config: EngineConfig) -> None:
    """Size torch's thread pool for a CPU engine (no-op for GPU engines)."""
    on_gpu = torch.cuda.is_available() if config.backend == "vllm" else config.device != "cpu"
    if not on_gpu:
        torch.set_num_threads(config.cpu_threads or os.cpu_count() or 1)


@dataclass(frozen=True)
class TokenPrompt:
    """Prompt token ids with one unexpanded image placeholder per image, and the images."""

    token_ids: list[int]
    images: list[Image.Image] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for one generate call."""

    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    # Never sampled: e.g. image placeholders, which would announce an image the turn lacks.
    banned_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One sampled continuation; `logprobs[i]` is the engine's logprob of `token_ids[i]` under
    the unmodified model distribution (before temperature or top-p)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None = None


@dataclass(frozen=True)
class Scored:
    """A prompt scored by the model: `token_ids` with image placeholders expanded, and
    `logprobs[i]` = log p(token_ids[i + 1] | token_ids[: i + 1])."""

    token_ids: list[int]
    logprobs: list[float]


class Engine(Protocol):
    """A policy model that samples, scores, and takes new weights without a restart."""

    @property
    def weight_version(self) -> int:
        """The version of the weights it serves (0: as loaded)."""
        ...

    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt, in prompt order. With `seeds` (one per
        prompt) prompt i samples from its own generator seeded `seeds[i]` (as vLLM does: the
        k-th of n completions from `seeds[i] + k`), whatever else the engine runs before or
        beside it; otherwise from `sampling.seed` or the engine's own stream."""
        ...

    def score(self, prompts: list[TokenPrompt]) -> list[Scored]:
        """Next-token logprobs of each prompt's own tokens."""
        ...

    def update_weights(self, version: int, weights: Weights) -> None:
        """Load new policy weights in place; later samples carry `version`."""
        ...

    def shutdown(self) -> None: ...


def check_seeds(prompts: Sequence[TokenPrompt], seeds: Sequence[int] | None) -> None:
    """Per-prompt seeds, when given, must be one per prompt."""
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
