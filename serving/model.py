"""The serving model: OpenAI chat completions and ERGO's two-stage answer on one engine.

A plain class, like the rollout worker: `jobs/serve.py` wraps it in a Ray Serve deployment
(HTTP, batching, autoscaling), and the unit tests call it directly. Each request is handled in
two steps. `prepare_*` validates and decodes it (every problem is a `RequestError`, a 4xx, and
the engine never sees the request); `run_*` takes a batch of prepared requests and makes as few
engine calls as it can. Images are resized by `core.geometry` under a vision-token cap before
they reach the engine, as everywhere else in the project; the two-stage path is the training
episode itself (`EpisodeRunner`, one completion per request).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from actors.chat_tokens import ChatTokens
from actors.engine import Completion, Engine, EngineConfig, Sampling, TokenPrompt
from actors.episode import EpisodeConfig, EpisodeRunner
from actors.guarded_engine import GuardedEngine, build_engine
from core.geometry import (
    QWEN_DEFAULT_MAX_TOKENS,
    budget_tokens,
    map_box,
    resize_to_budget,
    vision_tokens,
)
from core.prompts import DEFAULT_PROMPTS, Message, PromptsPath, PromptTemplates
from core.sample import Sample
from core.trajectory import Trajectory
from rewards.answer import answer_text, extract_choice
from serving.image_input import Fetcher, RequestLimits, check_image, decode_checked, image_bytes
from serving.protocol import (
    ChatCompletionRequest,
    ErgoRequest,
    ImagePart,
    RequestError,
    chat_completion_body,
    completion_id,
    models_body,
    validate_as,
)

logger = logging.getLogger(__name__)


class ServingConfig(BaseModel):
    """What the server accepts and how it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    served_model_name: str | None = None
    """The `model` clients name; default: the engine's model path or hub name. Responses carry
    this name whichever alias the request used."""
    served_model_aliases: tuple[Annotated[str, StringConstraints(min_length=1)], ...] = ()
    """Further names requests may use for the same model (e.g. `["ergo"]`, the name ERGO's
    client asks for); `/v1/models` lists them all."""
    limits: RequestLimits = RequestLimits()
    """Request size, image size and pixel limits, remote URLs."""
    chat_image_max_tokens: int = Field(1280, ge=4)
    """Vision-token cap of each chat image (resized by `core.geometry`, never over it)."""
    default_max_tokens: int = Field(512, ge=1)
    """Chat completion length when the request names none (cut to what the context leaves)."""
    default_temperature: float = Field(1.0, ge=0.0)
    """Chat temperature when the request names none (OpenAI's default is 1)."""
    max_n: int = Field(8, ge=1)
    """Most completions one chat request may ask for."""
    episode: EpisodeConfig = EpisodeConfig(group_size=1, temperature=0.0, max_new_tokens=256)
    """The two-stage endpoint: budgets and sampling of both turns (one completion each)."""
    prompts: PromptsPath = str(DEFAULT_PROMPTS)
    """Prompt templates TOML of the two-stage endpoint (e.g. a released checkpoint's own);
    checked when the config is validated."""

    @model_validator(mode="after")
    def _one_two_stage_completion(self) -> ServingConfig:
        if self.episode.group_size != 1:
            raise ValueError("episode.group_size must be 1: a request gets one answer")
        if getattr(self.episode, "mode", "two-stage") != "two-stage":
            raise ValueError("episode.mode must be two-stage: /v1/ergo runs ERGO's episode")
        return self


@dataclass(frozen=True)
class PreparedChat:
    """A validated chat request, ready for the engine."""

    prompt: TokenPrompt
    sampling: Sampling
    stop: tuple[str, ...]
    prompt_tokens: int  # with every image placeholder expanded to its vision tokens


@dataclass(frozen=True)
class PreparedErgo:
    """A validated two-stage request; the episode decodes the image itself."""

    sample: Sample
    received: float  # perf_counter when it arrived


class ServingModel:
    """One engine answering chat completions and two-stage requests, in batches."""

    def __init__(
        self,
        config: ServingConfig,
        engine_config: EngineConfig,
        engine: Engine | None = None,
        fetch: Fetcher | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        episode = config.episode
        needed = episode.coarse_max_tokens + episode.crop_max_tokens + 2 * episode.max_new_tokens
        if needed >= engine_config.max_model_len:
            raise ValueError(
                f"two-stage episodes need over {needed} tokens; engine.max_model_len is"
                f" {engine_config.max_model_len}"
            )
        tokenizer = AutoTokenizer.from_pretrained(engine_config.model)
        self.config = config
        self.chat = ChatTokens(tokenizer)
        self.special_tokens = tuple(tokenizer.all_special_tokens)
        self.runner = EpisodeRunner(self.chat, PromptTemplates.load(config.prompts), episode)
        self.model_name = config.served_model_name or engine_config.model
        self.model_names = tuple(dict.fromkeys([self.model_name, *config.served_model_aliases]))
        self.max_model_len = engine_config.max_model_len
        self.max_images = min(
            config.limits.max_images_per_request, engine_config.max_images_per_prompt
        )
        self.fetch = fetch
        self.engine = (
            GuardedEngine(engine, engine_config.request_timeout_s)
            if engine is not None
            else build_engine(engine_config)
        )
        logger.info("serving %s (max_model_len %d)", self.model_name, self.max_model_len)

    # ---- health -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What `/ready` reports: the engine generated a token within its deadline just now.
        Raises `EngineDead` once an engine call failed or timed out (the engine is then gone:
        Serve's health check fails and the replica is replaced)."""
        served = {"status": "ready", "model": self.model_name, "max_model_len": self.max_model_len}
        return {**served, **self.engine.health()}

    def models(self) -> dict[str, Any]:
        """What `/v1/models` lists: the served name and every alias."""
        return models_body(self.model_names)

    # ---- validation shared by both routes ---------------------------------------------------

    def check_model(self, name: str) -> None:
        """A request may name the served model or any alias; any other name is a 404."""
        if name not in self.model_names:
            known = ", ".join(repr(n) for n in self.model_names)
            raise RequestError(
                404,
                f"model {name!r} is not served here; this server serves {known}",
                "model_not_found",
                "model",
            )

    def check_text(self, text: str) -> None:
        """Text may not smuggle in the template's control tokens (an image pad asks the engine
        for an image that is not there; an `<|im_start|>` forges a turn)."""
        for token in self.special_tokens:
            if token in text:
                raise RequestError(400, f"text may not contain the special token {token}")

    def load_image(self, url: str, max_tokens: int) -> Image.Image:
        """Fetch or decode, check limits before decoding, resize under `max_tokens`."""
        limits = self.config.limits
        checked = check_image(image_bytes(url, limits, self.fetch), limits, max_tokens)
        return resize_to_budget(decode_checked(checked), max_tokens)

    # ---- chat completions -------------------------------------------------------------------

    def prepare_chat(self, body: Any) -> PreparedChat:
        request = validate_as(ChatCompletionRequest, body)
        self.check_model(request.model)
        urls = [
            part.image_url.url
            for m in request.messages
            if not isinstance(m.content, str)
            for part in m.content
            if isinstance(part, ImagePart)
        ]
        if len(urls) > self.max_images:
            raise RequestError(
                400, f"{len(urls)} images in one request; at most {self.max_images} are accepted"
            )
        messages = self._messages(request)
        images = [self.load_image(url, self.config.chat_image_max_tokens) for url in urls]
        ids = self.chat.prompt(messages)
        if ids.count(self.chat.image_token_id) != len(images):
            raise RequestError(400, "the conversation's image placeholders do not match its images")
        prompt_tokens = len(ids) - len(images) + sum(vision_tokens(*im.size) for im in images)
        return PreparedChat(
            prompt=TokenPrompt(ids, images),
            sampling=self._chat_sampling(request, prompt_tokens),
            stop=request.stop_sequences,
            prompt_tokens=prompt_tokens,
        )

    def _messages(self, request: ChatCompletionRequest) -> list[Message]:
        messages: list[Message] = []
        for m in request.messages:
            role = "system" if m.role == "developer" else m.role
            if isinstance(m.content, str):
                self.check_text(m.content)
                messages.append({"role": role, "content": m.content})
                continue
            parts: list[dict[str, str]] = []
            for part in m.content:
                if isinstance(part, ImagePart):
                    parts.append({"type": "image"})
                else:
                    self.check_text(part.text)
                    parts.append({"type": "text", "text": part.text})
            if role == "user":
                messages.append({"role": role, "content": parts})
            else:  # text parts only (checked by the protocol); the template wants a string
                messages.append({"role": role, "content": "".join(p["text"] for p in parts)})
        return messages

    def _chat_sampling(self, request: ChatCompletionRequest, prompt_tokens: int) -> Sampling:
        room = self.max_model_len - prompt_tokens
        asked = request.token_limit
        if room < 1 or (asked is not None and asked > room):
            raise RequestError(
                400,
                f"the prompt is {prompt_tokens} tokens (images included) and asks for"
                f" {asked or 1} more; the model's context is {self.max_model_len} tokens",
                "context_length_exceeded",
                "messages",
            )
        temperature = request.temperature
        if temperature is None:
            temperature = self.config.default_temperature
        if request.n > self.config.max_n:
            raise RequestError(400, f"n = {request.n}; at most {self.config.max_n}", param="n")
        if request.n > 1 and temperature == 0:
            raise RequestError(400, "n > 1 needs temperature > 0 (greedy answers are identical)")
        return Sampling(
            max_tokens=asked or min(self.config.default_max_tokens, room),
            temperature=temperature,
            top_p=request.top_p or 1.0,
            n=request.n,
            seed=request.seed,
            banned_token_ids=self.chat.vision_token_ids,
        )

    def run_chat(self, items: list[PreparedChat]) -> list[dict[str, Any]]:
        """One engine call per distinct sampling setting in the batch; bodies in item order."""
        groups: dict[Sampling, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.sampling, []).append(i)
        bodies: dict[int, dict[str, Any]] = {}
        for sampling, indices in groups.items():
            outputs = self.engine.generate([items[i].prompt for i in indices], sampling)
            for i, completions in zip(indices, outputs, strict=True):
                bodies[i] = self._chat_body(items[i], completions)
        return [bodies[i] for i in range(len(items))]

    def _chat_body(self, item: PreparedChat, completions: list[Completion]) -> dict[str, Any]:
        choices, used = [], 0
        for completion in completions:
            text, reason, tokens = self._apply_stop(completion, item.stop)
            choices.append((text, reason))
            used += tokens
        return chat_completion_body(self.model_name, choices, item.prompt_tokens, used)

    def _apply_stop(self, completion: Completion, stop: tuple[str, ...]) -> tuple[str, str, int]:
        """(text, finish reason, tokens). Stop strings are applied to the decoded text (the
        engines work on token ids); the token count is the fewest tokens that reach the stop."""
        ids = completion.token_ids
        text = self.chat.decode(ids)
        reason = "length" if completion.finish_reason == "length" else "stop"
        cuts = [text.find(s) for s in stop if s in text]
        if not cuts:
            return text, reason, len(ids)
        low, high = 1, len(ids)  # the shortest prefix whose text holds a stop string
        while low < high:
            mid = (low + high) // 2
            prefix = self.chat.decode(ids[:mid])
            if any(s in prefix for s in stop):
                high = mid
            else:
                low = mid + 1
        return text[: min(cuts)], "stop", low

    # ---- the two-stage endpoint -------------------------------------------------------------

    def prepare_ergo(self, body: Any) -> PreparedErgo:
        received = time.perf_counter()
        request = validate_as(ErgoRequest, body)
        if request.model is not None:
            self.check_model(request.model)
        for text in (request.question, *request.options):
            self.check_text(text)
        data = image_bytes(request.image, self.config.limits, self.fetch)
        episode = self.config.episode
        budget = min(episode.coarse_max_tokens, episode.crop_max_tokens)
        check_image(data, self.config.limits, budget)  # the episode decodes it once, later
        sample = Sample(
            id=completion_id("ergo"),
            image=data,
            question=request.question,
            options=tuple(request.options),
            answer="",
        )
        return PreparedErgo(sample, received)

    def run_ergo(self, items: list[PreparedErgo]) -> list[dict[str, Any] | RequestError]:
        """Both stages for the whole batch (two engine calls); a body or an error per item."""
        trajectories = self.runner.run(self.engine, [item.sample for item in items])
        return [self._ergo_body(item, t) for item, t in zip(items, trajectories, strict=True)]

    def _ergo_body(self, item: PreparedErgo, t: Trajectory) -> dict[str, Any] | RequestError:
        if t.failure is not None:
            status = 400 if t.failure.startswith(("image", "empty")) else 500
            return RequestError(status, f"cannot answer: {t.failure}", "episode_failed")
        reply = answer_text(t.stage2_text, require_tag=False) or ""
        options = t.sample.options
        coarse, crop = t.images[0].size, t.images[1].size
        box = None
        if t.fallback is None and t.coarse_box is not None:
            box = [round(v, 1) for v in map_box(t.coarse_box, coarse, t.original_size)]
        width, height = t.original_size
        return {
            "id": t.sample.id,
            "object": "ergo.answer",
            "model": self.model_name,
            "answer": extract_choice(reply, options) if options else reply,
            "answer_text": reply,
            "box": box,
            "crop": list(t.crop_box) if t.crop_box else None,
            "fallback": t.fallback,
            "image_size": [width, height],
            "coarse_size": list(coarse),
            "crop_size": list(crop),
            "vision_tokens": {
                "coarse": t.coarse_tokens,
                "crop": t.crop_tokens,
                "total": t.vision_tokens,
                "full_resolution": budget_tokens(width, height, QWEN_DEFAULT_MAX_TOKENS),
            },
            "timings": {
                "stage1_s": round(t.time_stage1_s, 4),
                "stage2_s": round(t.time_stage2_s, 4),
                "total_s": round(time.perf_counter() - item.received, 4),
            },
            "stages": {"coarse": t.stage1_text, "answer": t.stage2_text},
            "finish_reasons": list(t.finish_reasons),
        }
