"""The trajectory record: one two-stage episode as the learner and the rewards see it.

`token_ids` is the whole conversation as the policy saw and wrote it: the stage-2 prompt (which
holds the stage-1 prompt and stage 1's reply verbatim) followed by stage 2's reply, with each
image as ONE `<|image_pad|>` token (engines and learners expand them). `loss_mask` is 1 exactly
on the tokens the policy sampled in either turn; `logprobs` holds the engine's logprobs there.
Images are shared by reference within a group (the coarse view is one object for G members).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from core.sample import Sample


@dataclass
class Trajectory:
    """One member of a prompt's group. `failure` is set (and `token_ids` empty) when the
    episode could not run, e.g. an unreadable image; such trajectories are kept, never dropped."""

    sample: Sample
    group_index: int
    weight_version: int
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)  # [coarse view, crop]
    stage1_text: str = ""
    stage2_text: str = ""
    coarse_box: tuple[float, float, float, float] | None = None  # as named, coarse pixels
    crop_box: tuple[int, int, int, int] | None = None  # original pixels
    fallback: str | None = None  # why the crop fell back to the whole image
    original_size: tuple[int, int] = (0, 0)
    coarse_tokens: int = 0
    crop_tokens: int = 0
    finish_reasons: tuple[str | None, str | None] = (None, None)
    time_stage1_s: float = 0.0
    time_stage2_s: float = 0.0
    failure: str | None = None
    early_query: Any = None  # `rewards.verifier.EarlyQuery`, when the verifier was asked early

    @property
    def prompt_id(self) -> str:
        return self.sample.id

    @property
    def vision_tokens(self) -> int:
        return self.coarse_tokens + self.crop_tokens

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)


TRAJECTORY_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("group_index", pa.int32()),
        ("weight_version", pa.int64()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("gt_box", pa.list_(pa.float64())),
        ("token_ids", pa.list_(pa.int32())),
        ("loss_mask", pa.list_(pa.int8())),
        ("logprobs", pa.list_(pa.float32())),
        ("coarse_png", pa.binary()),
        ("crop_png", pa.binary()),
        ("stage1_text", pa.string()),
        ("stage2_text", pa.string()),
        ("coarse_box", pa.list_(pa.float64())),
        ("crop_box", pa.list_(pa.int32())),
        ("fallback", pa.string()),
        ("original_size", pa.list_(pa.int32())),
        ("coarse_tokens", pa.int32()),
        ("crop_tokens", pa.int32()),
        ("finish_reasons", pa.list_(pa.string())),
        ("time_stage1_s", pa.float64()),
        ("time_stage2_s", pa.float64()),
        ("failure", pa.string()),
    ]
)


def failed_trajectories(
    samples: Iterable[Sample], group_size: int, version: int, reason: str
) -> list[Trajectory]:
    """`group_size` trajectories per sample, each marked with why it could not run: the one
    builder of failure records, so that a failure stays in every denominator, never a gap."""
    return [Trajectory(s, g, version, failure=reason) for s in samples for g in range(group_size)]


def trajectory_row(t: Trajectory) -> dict[str, Any]:
    """A flat row for inspection and replay; images as PNG bytes."""
    pngs = [_png(image) for image in t.images] + [None, None]
    return {
        "prompt_id": t.prompt_id,
        "group_index": t.group_index,
        "weight_version": t.weight_version,
        "question": t.sample.question,
        "options": list(t.sample.options),
        "answer": t.sample.answer,
        "gt_box": None if t.sample.gt_box is None else list(t.sample.gt_box),
        "token_ids": t.token_ids,
        "loss_mask": t.loss_mask,
        "logprobs": t.logprobs,
        "coarse_png": pngs[0],
        "crop_png": pngs[1],
        "stage1_text": t.stage1_text,
        "stage2_text": t.stage2_text,
        "coarse_box": None if t.coarse_box is None else list(t.coarse_box),
        "crop_box": None if t.crop_box is None else list(t.crop_box),
        "fallback": t.fallback,
        "original_size": list(t.original_size),
        "coarse_tokens": t.coarse_tokens,
        "crop_tokens": t.crop_tokens,
        "finish_reasons": list(t.finish_reasons),
        "time_stage1_s": t.time_stage1_s,
        "time_stage2_s": t.time_stage2_s,
        "failure": t.failure,
    }


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory]) -> int:
    """Write trajectories to one parquet file; returns the row count."""
    rows = [trajectory_row(t) for t in trajectories]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA), path)
    return len(rows)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
