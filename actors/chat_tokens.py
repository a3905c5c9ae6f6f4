"""Chat turns as token ids, so that a stage-2 prompt holds stage 1's reply exactly as sampled.

Re-rendering the reply as text and tokenizing again can give different ids than the policy
sampled; training would then score tokens it never produced. Instead the stage-2 prompt is the
stage-1 prompt ids + the sampled reply ids + the ids of the template's text that closes the
assistant turn and opens the next user turn and assistant header.
"""

from __future__ import annotations

from typing import Any

from core.prompts import Message

_SENTINEL = "\x00ERGO-REPLY\x00"
_VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


class TemplateError(ValueError):
    """The chat template does not render a conversation as a prefix of its continuation."""


class ChatTokens:
    """Renders conversations with the tokenizer's chat template; one image pad per image."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token_id: int = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self.image_token_id: int = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        vocab = tokenizer.get_vocab()
        # The policy must never write these: a sampled image pad would ask for an image.
        self.vision_token_ids = tuple(vocab[t] for t in _VISION_TOKENS if t in vocab)

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt(self, messages: list[Message]) -> list[int]:
        """Token ids of a conversation followed by the assistant header."""
        return self.encode(self.render(messages))

    def continuation(
        self, messages: list[Message], reply_ids: list[int], next_user: Message
    ) -> list[int]:
        """Ids that follow `prompt(messages) + reply_ids` to give the next turn's prompt.

        If the reply ended with the end-of-turn token it is kept as sampled; if it was cut
        off, the template's end-of-turn is appended (then it is not the policy's token).
        """
        full = self.render([*messages, {"role": "assistant", "content": _SENTINEL}, next_user])
        head = self.render(messages) + _SENTINEL
        if not full.startswith(head):
            raise TemplateError("the chat template does not keep earlier turns verbatim")
        tail = full[len(head) :]
        eos_text = self.tokenizer.eos_token
        if reply_ids and reply_ids[-1] == self.eos_token_id and tail.startswith(eos_text):
            tail = tail[len(eos_text) :]
        return self.encode(tail)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
