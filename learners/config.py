"""The learner's configuration: objective, optimizer, schedule, batching, precision."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from learners.grpo import GRPOConfig


class OptimConfig(BaseModel):
    """AdamW, gradient clipping and the learning-rate schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-6, gt=0.0)
    """Peak learning rate (GRPO-for-VLM default 1e-6)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = Field(1e-8, gt=0.0)
    """AdamW epsilon."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradients are clipped to this global norm."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up from 0 to `lr` over this many steps."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """After warm-up: keep `lr`, or decay it to 0 at `total_steps`."""
    total_steps: int = Field(1000, ge=1)
    """Length of the decay (linear, cosine)."""


class LearnerConfig(BaseModel):
    """One learner group: the policy it trains and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """The policy's initial weights (an HF folder); the frozen reference loads the same."""
    objective: Literal["grpo", "sft"] = "grpo"
    """GRPO on rollouts, or supervised fine-tuning (mean NLL of the masked tokens: a warm start)."""
    grpo: GRPOConfig = GRPOConfig()
    """GRPO's settings."""
    optim: OptimConfig = OptimConfig()
    """Optimizer and schedule."""
    micro_batch_size: int = Field(4, ge=1)
    """Trajectories per forward/backward pass; gradients accumulate over a step's micro-batches."""
    mixed_precision: bool | None = None
    """bf16 parameters and compute with fp32 gradient reduction (FSDP2); default: on GPU only."""
    freeze_vision: bool = False
    """Keep the vision encoder's weights fixed (its patch merger still trains): it keeps the
    features it was given, and the backward pass skips its blocks."""
    export_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """The dtype of the weights sent to the rollout engines and of the HF export; `auto`: the
    training dtype (bf16 under mixed precision, else fp32). The fp32 master weights stay in the
    checkpoints."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    seed: int = 0
    """Seeds torch on every rank."""
