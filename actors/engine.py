"""The generation-engine interface every rollout backend implements.

An engine takes multi-turn, multi-image chat requests and returns, per request, `n` sampled
completions with their token ids and the engine's per-token logprobs. The vLLM engine serves
rollouts; other backends (a transformers engine for machines without vLLM) plug in behind the
same Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from core.prompts import Message


@dataclass(frozen=True)
class ChatRequest:
    """A conversation and its images, in order of the image parts in `messages`."""

    messages: list[Message]
    images: list[Image.Image] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for one generate call."""

    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled continuation; `logprobs[i]` is the engine's logprob of `token_ids[i]`."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    prompt_token_ids: list[int]
    finish_reason: str | None = None


class Engine(Protocol):
    def generate(self, requests: list[ChatRequest], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions for each request, in request order."""
        ...
