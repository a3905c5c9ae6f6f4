"""Training rows and micro-batches: both turns of a trajectory, with both turns' images.

A `TrainRow` is what the learner needs of one trajectory: its token ids (one `<|image_pad|>`
per image), its images (coarse view and crop), the loss mask and the engine's logprobs per
token, and its advantage. `micro_batch` pads rows into the model's tensors and maps the masks,
the engine's logprobs and each sampled token's stage onto the expanded sequence, shifted so
that position t scores token t + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from core.model_inputs import model_inputs
from core.trajectory import Trajectory


@dataclass(frozen=True)
class TrainRow:
    token_ids: list[int]
    images: list[Image.Image]
    loss_mask: list[int]
    logprobs: list[float]
    advantage: float

    @classmethod
    def from_trajectory(cls, t: Trajectory, advantage: float) -> TrainRow:
        return cls(t.token_ids, t.images, t.loss_mask, t.logprobs, advantage)

    def masked(self) -> TrainRow:
        """The same row with nothing to train on (pads a rank's last micro-batch)."""
        return TrainRow(self.token_ids, self.images, [0] * len(self.loss_mask), self.logprobs, 0.0)


@dataclass(frozen=True)
class MicroBatch:
    """Model inputs plus per-target tensors: `_BT` index t is the prediction of token t + 1."""

    inputs: dict[str, torch.Tensor]
    mask_BT: torch.Tensor
    engine_logprobs_BT: torch.Tensor
    stage_BT: torch.Tensor  # 1 on stage 1's sampled tokens, 2 on stage 2's, 0 elsewhere
    advantages_B: torch.Tensor
    positions: list[list[int]]  # where each row's given tokens sit in the expanded sequence


def micro_batch(
    rows: Sequence[TrainRow], image_processor: Any, image_token_id: int, pad_token_id: int
) -> MicroBatch:
    built = model_inputs(
        [(r.token_ids, r.images) for r in rows], image_processor, image_token_id, pad_token_id
    )
    shape = built.tensors["input_ids"].shape
    mask, engine, stage = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    for b, (row, positions) in enumerate(zip(rows, built.positions, strict=True)):
        index = torch.tensor(positions)
        mask[b, index] = torch.tensor(row.loss_mask, dtype=torch.float32)
        engine[b, index] = torch.tensor(row.logprobs, dtype=torch.float32)
        stage[b, index] = torch.tensor(sampled_stages(row.loss_mask), dtype=torch.float32)
    return MicroBatch(
        inputs=built.tensors,
        mask_BT=mask[:, 1:],
        engine_logprobs_BT=engine[:, 1:],
        stage_BT=stage[:, 1:],
        advantages_B=torch.tensor([r.advantage for r in rows], dtype=torch.float32),
        positions=built.positions,
    )


def sampled_stages(loss_mask: Sequence[int]) -> list[int]:
    """Each token's stage: 1 on the first run of sampled tokens (stage 1's reply), 2 on every
    later run (stage 2's), 0 on prompt tokens."""
    stages, runs, previous = [], 0, 0
    for sampled in loss_mask:
        runs += int(bool(sampled) and not previous)
        stages.append(min(runs, 2) if sampled else 0)
        previous = sampled
    return stages


def split_for_ranks(rows: Sequence[TrainRow], world_size: int) -> list[list[TrainRow]]:
    """Deal rows to ranks round-robin, padding the shorter shards with masked copies: FSDP's
    collectives need every rank to run as many forward/backward passes, and masked rows add
    nothing to the loss or the gradients."""
    if not rows:
        raise ValueError("a training step needs at least one row")
    shards = [list(rows[r::world_size]) for r in range(world_size)]
    longest = max(len(s) for s in shards)
    for shard in shards:
        filler = (shard or list(rows))[0].masked()
        shard.extend([filler] * (longest - len(shard)))
    return shards
