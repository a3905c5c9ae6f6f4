"""GRPO's math as pure tensor functions: advantages, the clipped surrogate, KL, aggregation.

Shapes are in the names: `_B` one value per trajectory, `_BT` per token, `_BTV` per token and
vocabulary entry. Masks are 1 on the tokens the policy sampled (`Trajectory.loss_mask`).
Aggregation takes its normalizers (token and sequence counts) from the caller, so a step split
over micro-batches and ranks adds up to exactly the loss of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

KLEstimator = Literal["k1", "k2", "k3"]
AdvantageStd = Literal["sample", "population", "none"]
OldLogprobs = Literal["learner", "engine"]
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-sum-norm"]


class GRPOConfig(BaseModel):
    """The objective."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    advantage_std: AdvantageStd = "sample"
    """Divide advantages by the group's reward std: `sample` (Bessel-corrected, as verl, TRL
    and OpenRLHF compute it), `population`, or `none` to centre only (Dr. GRPO)."""
    std_eps: float = Field(1e-6, gt=0.0)
    """Added to the std, so a group whose rewards are all equal gets zero advantages."""
    old_logprobs: OldLogprobs = "learner"
    """The ratio's denominator, the policy that sampled. `learner`: the learner's own logprobs
    of the sampled tokens before this step's update, as verl and TRL compute them; the learner
    makes one optimizer step per batch, so these are the step's forward pass, detached (no
    second pass). `engine`: the logprobs the rollout engine reported while sampling."""
    tis_cap: float | None = Field(None, gt=0.0)
    """Truncated importance sampling: each sampled token's policy loss is weighted by
    min(p_learner / p_engine, tis_cap), which corrects for the engine sampling from a slightly
    different distribution than the learner trains (bf16 kernels on GPUs). None: off. Needs
    `old_logprobs = "learner"` (with `engine` the ratio already includes the mismatch)."""
    clip_low: float = Field(0.2, ge=0.0, lt=1.0)
    """The ratio is clipped below at 1 - clip_low."""
    clip_high: float = Field(0.2, ge=0.0)
    """The ratio is clipped above at 1 + clip_high (raise it for DAPO's clip-higher)."""
    kl_beta: float = Field(0.04, ge=0.0)
    """Weight of the KL penalty to the frozen reference; 0 skips the reference model."""
    kl_estimator: KLEstimator = "k3"
    """k1: log(p/q); k2: (log(p/q))^2 / 2; k3: q/p - log(q/p) - 1 (unbiased, non-negative)."""
    loss_aggregation: LossAggregation = "token-mean"
    """token-mean over all sampled tokens of the step; seq-mean-token-mean: each trajectory's
    token mean, then the mean over trajectories; seq-sum-norm: token sums / (trajectories x
    `loss_norm_constant`), as Dr. GRPO."""
    loss_norm_constant: float = Field(1024.0, gt=0.0)
    """The constant of seq-sum-norm (e.g. the generation budget)."""

    @model_validator(mode="after")
    def _tis_needs_learner_logprobs(self) -> GRPOConfig:
        if self.tis_cap is not None and self.old_logprobs != "learner":
            raise ValueError('tis_cap needs old_logprobs = "learner"')
        return self


@dataclass(frozen=True)
class Normalizer:
    """Sampled tokens and trajectories of the WHOLE step (all micro-batches, all ranks)."""

    tokens: float
    sequences: float


def group_advantages(
    rewards_B: torch.Tensor, group_ids_B: torch.Tensor, std: AdvantageStd, eps: float
) -> torch.Tensor:
    """Rewards centred on their group's mean (and divided by its `std` plus `eps`).

    Groups are given by id, so they need not be contiguous or of equal size. The sample std
    divides the squared deviations by n - 1, the population std by n; a group of one has
    std 0, hence advantage 0.
    """
    _, group_B = torch.unique(group_ids_B, return_inverse=True)
    count_G = torch.bincount(group_B).to(rewards_B.dtype)
    mean_G = torch.zeros_like(count_G).index_add_(0, group_B, rewards_B) / count_G
    centred_B = rewards_B - mean_G[group_B]
    if std == "none":
        return centred_B
    dof_G = (count_G - 1).clamp(min=1) if std == "sample" else count_G
    var_G = torch.zeros_like(count_G).index_add_(0, group_B, centred_B**2) / dof_G
    return centred_B / (var_G.sqrt()[group_B] + eps)


def clipped_surrogate(
    logprobs_BT: torch.Tensor,
    old_logprobs_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic per-token loss, and where clipping engaged (1.0 there)."""
    ratio_BT = torch.exp(logprobs_BT - old_logprobs_BT)
    adv_BT = advantages_B[:, None]
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * torch.clamp(ratio_BT, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped_BT, clipped_BT), (clipped_BT > unclipped_BT).float()


def kl_penalty(
    logprobs_BT: torch.Tensor, ref_logprobs_BT: torch.Tensor, estimator: KLEstimator
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' logprobs."""
    log_ratio_BT = ref_logprobs_BT - logprobs_BT  # log q/p
    if estimator == "k1":
        return -log_ratio_BT
    if estimator == "k2":
        return 0.5 * log_ratio_BT**2
    return torch.exp(log_ratio_BT) - log_ratio_BT - 1.0


def aggregate(
    loss_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    mode: LossAggregation,
    norm: Normalizer,
    constant: float = 1.0,
) -> torch.Tensor:
    """This micro-batch's share of the step's loss: summing the shares gives the whole."""
    masked_BT = loss_BT * mask_BT
    if mode == "token-mean":
        return masked_BT.sum() / norm.tokens
    if mode == "seq-mean-token-mean":
        per_seq_B = masked_BT.sum(-1) / mask_BT.sum(-1).clamp(min=1)
        return per_seq_B.sum() / norm.sequences
    return masked_BT.sum() / (norm.sequences * constant)


def token_logprobs(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Logprob of each target token (fp32 softmax)."""
    logprobs_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    return logprobs_BTV.gather(-1, targets_BT[..., None])[..., 0]


def entropy(logits_BTV: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the policy's distribution (a metric, not trained on)."""
    logprobs_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    return -(logprobs_BTV.exp() * logprobs_BTV).sum(-1)


def old_logprobs(
    logprobs_BT: torch.Tensor, engine_logprobs_BT: torch.Tensor, source: OldLogprobs
) -> torch.Tensor:
    """The ratio's denominator: the learner's logprobs (detached) or the engine's."""
    return logprobs_BT.detach() if source == "learner" else engine_logprobs_BT


def tis_weights(
    old_logprobs_BT: torch.Tensor, engine_logprobs_BT: torch.Tensor, cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated importance weights min(p_old / p_engine, cap) per token, and where the cap
    engaged (1.0 there). No gradient flows through them."""
    raw_BT = torch.exp(old_logprobs_BT.detach() - engine_logprobs_BT)
    return raw_BT.clamp(max=cap), (raw_BT > cap).float()


def grpo_loss(
    logprobs_BT: torch.Tensor,
    engine_logprobs_BT: torch.Tensor,
    ref_logprobs_BT: torch.Tensor | None,
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    config: GRPOConfig,
    norm: Normalizer,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step's loss share of one micro-batch, and its metric sums (over masked tokens)."""
    old_BT = old_logprobs(logprobs_BT, engine_logprobs_BT, config.old_logprobs)
    policy_BT, clipped_BT = clipped_surrogate(
        logprobs_BT, old_BT, advantages_B, config.clip_low, config.clip_high
    )
    sums = {"clip_fraction": (clipped_BT * mask_BT).sum()}
    if config.tis_cap is not None:
        weights_BT, capped_BT = tis_weights(old_BT, engine_logprobs_BT, config.tis_cap)
        policy_BT = policy_BT * weights_BT
        sums["tis_weight"] = (weights_BT * mask_BT).sum()
        sums["tis_capped"] = (capped_BT * mask_BT).sum()
    loss_BT = policy_BT
    if config.kl_beta > 0:
        if ref_logprobs_BT is None:
            raise ValueError("kl_beta > 0 needs the reference model's logprobs")
        kl_BT = kl_penalty(logprobs_BT, ref_logprobs_BT, config.kl_estimator)
        loss_BT = loss_BT + config.kl_beta * kl_BT
        sums["kl"] = (kl_BT.detach() * mask_BT).sum()
    loss = aggregate(loss_BT, mask_BT, config.loss_aggregation, norm, config.loss_norm_constant)
    return loss, sums
