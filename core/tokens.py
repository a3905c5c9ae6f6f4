"""Token-level helpers shared by engines and learners."""

from __future__ import annotations

from collections.abc import Sequence


def expand_image_pads(
    token_ids: Sequence[int], image_token_id: int, tokens_per_image: Sequence[int]
) -> list[int]:
    """Replace the i-th `image_token_id` by `tokens_per_image[i]` copies (as the model sees it).

    Raises ValueError when the number of placeholders differs from the number of images.
    """
    found = sum(1 for t in token_ids if t == image_token_id)
    if found != len(tokens_per_image):
        raise ValueError(f"{found} image placeholders for {len(tokens_per_image)} images")
    expanded: list[int] = []
    counts = iter(tokens_per_image)
    for token in token_ids:
        expanded.extend([token] * next(counts) if token == image_token_id else [token])
    return expanded


def expanded_positions(
    token_ids: Sequence[int], image_token_id: int, tokens_per_image: Sequence[int]
) -> list[int]:
    """Where each token of `token_ids` lands after `expand_image_pads` (an image pad: its first
    copy). Maps per-token arrays such as loss masks and logprobs onto the expanded sequence."""
    positions: list[int] = []
    offset, image = 0, 0
    for token in token_ids:
        positions.append(offset)
        if token == image_token_id:
            offset += tokens_per_image[image]
            image += 1
        else:
            offset += 1
    return positions


def mm_token_type_ids(expanded_ids: Sequence[int], image_token_id: int) -> list[int]:
    """1 on image tokens, 0 elsewhere, as the Qwen2.5-VL processor returns it. transformers
    needs it to compute the 3-D (t, h, w) rotary positions of image tokens: without it the model
    silently falls back to 1-D positions and no longer matches vLLM or the checkpoint."""
    return [1 if t == image_token_id else 0 for t in expanded_ids]
