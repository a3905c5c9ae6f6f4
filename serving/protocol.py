"""Request and response shapes of the serving API: OpenAI's chat completions and ERGO's two-stage
endpoint, as pydantic models that turn malformed input into a `RequestError` (a 4xx).

Only what this server implements is accepted: text and `image_url` content parts, the roles
system/developer/user/assistant, and temperature, top_p, max_tokens, stop, seed and n. Fields
that OpenAI clients send by default (`user`, `metadata`, penalties of 0, ...) are ignored;
features we do not implement (streaming, tools, logprobs, non-zero penalties) are refused by
name rather than silently dropped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)


class RequestError(Exception):
    """A request the server will not run; `status` is the HTTP status (4xx)."""

    def __init__(
        self, status: int, message: str, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape, which its clients turn into `BadRequestError` and friends."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def validate_as(model: type[M], body: Any) -> M:
    """Parse a JSON body into `model`, or raise a 400 naming every bad field."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", "invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise RequestError(400, problems, "invalid_request", ".".join(map(str, first))) from exc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageUrl(_Strict):
    url: str = Field(min_length=1)
    """A `data:image/...;base64,` URL (or http(s) where the server allows remote images)."""
    detail: Literal["auto", "low", "high"] = "auto"
    """Accepted for compatibility; the server's own vision-token cap decides the size."""


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl

    @model_validator(mode="before")
    @classmethod
    def _bare_url(cls, data: Any) -> Any:
        """Some clients send `"image_url": "data:..."` rather than `{"url": ...}`."""
        if isinstance(data, dict) and isinstance(data.get("image_url"), str):
            return {**data, "image_url": {"url": data["image_url"]}}
        return data


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None
    """Accepted and ignored (the chat template has no place for it)."""

    @model_validator(mode="after")
    def _images_from_users(self) -> ChatMessage:
        parts = [] if isinstance(self.content, str) else self.content
        if self.role != "user" and any(isinstance(p, ImagePart) for p in parts):
            raise ValueError(f"images may only appear in user messages, not {self.role}")
        return self


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown fields are ignored, as OpenAI's server does."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    tools: list[Any] | None = None
    logprobs: bool | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.stream:
            raise ValueError("streaming is not supported; send stream=false")
        if self.tools:
            raise ValueError("tools are not supported")
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence and frequency penalties are not supported")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop holds at most 4 sequences")
        if any(not s for s in self.stop_sequences):
            raise ValueError("stop sequences must not be empty")
        return self

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ErgoRequest(_Strict):
    """`POST /v1/ergo`: one image and one question, answered coarse -> crop -> answer."""

    image: str = Field(min_length=1)
    """The image as a `data:image/...;base64,` URL (or http(s) where remote images are allowed)."""
    question: str = Field(min_length=1)
    """The question, without its options."""
    options: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=26)
    """Option texts (A, B, ...); empty for a free-form question."""
    model: str | None = None
    """Checked against the served model when given."""

    @model_validator(mode="after")
    def _question_text(self) -> ErgoRequest:
        if not self.question.strip():
            raise ValueError("question is blank")
        return self


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def chat_completion_body(
    model: str, choices: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """OpenAI's `chat.completion` object; `choices` are (text, finish reason) pairs."""
    return {
        "id": completion_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "logprobs": None,
            }
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def models_body(names: Sequence[str]) -> dict[str, Any]:
    """`GET /v1/models`: the served model under each of its names."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "ergo-rl"} for name in names
        ],
    }
