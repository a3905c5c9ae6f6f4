"""Token ids + images -> the tensors a transformers Qwen2.5-VL forward takes, for a batch.

Shared by the transformers engine (one prompt) and the learner (padded micro-batches), so both
feed the model the same way: each `<|image_pad|>` expanded to its image's vision tokens, the
images through the processor's image processor (already on the 28-px grid, so kept at size),
right padding with an attention mask, and `mm_token_type_ids`, without which transformers
silently gives image tokens 1-D rotary positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from core.tokens import expand_image_pads, expanded_positions, mm_token_type_ids


@dataclass(frozen=True)
class ModelInputs:
    """A batch as the model sees it. `positions[b][i]` is where row b's i-th given token
    landed after expansion (maps per-token masks and logprobs onto the model's sequence)."""

    token_ids: list[list[int]]
    positions: list[list[int]]
    tensors: dict[str, torch.Tensor]


def model_inputs(
    rows: Sequence[tuple[Sequence[int], Sequence[Image.Image]]],
    image_processor: Any,
    image_token_id: int,
    pad_token_id: int,
) -> ModelInputs:
    """Build the tensors of a right-padded batch of (token ids, images) rows."""
    images = [_rgb(im) for _, row_images in rows for im in row_images]
    tensors: dict[str, torch.Tensor] = {}
    tokens_per_image: list[int] = []
    if images:
        processed = image_processor(images=images, return_tensors="pt")
        grid_thw = processed["image_grid_thw"]
        merge = int(image_processor.merge_size) ** 2
        tokens_per_image = [int(g.prod()) // merge for g in grid_thw]
        tensors["pixel_values"] = processed["pixel_values"]
        tensors["image_grid_thw"] = grid_thw
    expanded, positions, start = [], [], 0
    for ids, row_images in rows:
        counts = tokens_per_image[start : start + len(row_images)]
        start += len(row_images)
        expanded.append(expand_image_pads(ids, image_token_id, counts))
        positions.append(expanded_positions(ids, image_token_id, counts))
    length = max(len(ids) for ids in expanded)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for b, ids in enumerate(expanded):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention[b, : len(ids)] = 1
    tensors["input_ids"], tensors["attention_mask"] = input_ids, attention
    if images:
        types = [mm_token_type_ids(ids, image_token_id) for ids in expanded]
        tensors["mm_token_type_ids"] = torch.tensor([t + [0] * (length - len(t)) for t in types])
    return ModelInputs(expanded, positions, tensors)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
