"""GRPO's math against hand-computed values."""

import math

import pytest
import torch

from learners.batch import sampled_stages
from learners.grpo import (
    GRPOConfig,
    Normalizer,
    aggregate,
    clipped_surrogate,
    entropy,
    group_advantages,
    grpo_loss,
    kl_penalty,
    tis_weights,
)


def test_equal_rewards_give_zero_advantages() -> None:
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    adv = group_advantages(rewards, groups, "population", eps=1e-6)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    # group 1: mean 1, population std 1 -> -1, +1 (up to eps)
    assert adv[3:].tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)


def test_advantages_by_hand() -> None:
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.5])
    groups = torch.tensor([7, 7, 7, 9])  # ids need not be contiguous; a group of one gets 0
    adv = group_advantages(rewards, groups, "none", eps=1e-6)
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])
    for std, value in (("population", math.sqrt(2 / 3)), ("sample", 1.0)):
        normalized = group_advantages(rewards, groups, std, eps=1e-12)
        assert normalized[:3].tolist() == pytest.approx([1 / value, -1 / value, 0.0])
        assert normalized[3].item() == 0.0


def test_the_default_std_is_the_sample_std_of_the_reference_implementations() -> None:
    """verl, TRL and OpenRLHF divide by torch.std (Bessel-corrected) per group plus eps."""
    config = GRPOConfig()
    assert config.advantage_std == "sample"
    rewards_GN = torch.rand(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    groups = torch.arange(40) // 8
    adv = group_advantages(rewards_GN.flatten(), groups, config.advantage_std, config.std_eps)
    mean, std = rewards_GN.mean(1, keepdim=True), rewards_GN.std(1, keepdim=True)
    expected = (rewards_GN - mean) / (std + config.std_eps)
    assert torch.allclose(adv, expected.flatten(), atol=1e-12)
    population = group_advantages(rewards_GN.flatten(), groups, "population", config.std_eps)
    assert (adv - population).abs().max() > 0.05  # the two differ visibly at G = 8


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [
        (1.1, 1.0, False),  # inside the range
        (1.2, 1.0, False),  # exactly at the edge: not beyond it
        (1.21, 1.0, True),  # beyond 1 + high with a positive advantage
        (1.5, -1.0, False),  # a negative advantage is never clipped from above
        (0.79, -1.0, True),  # beyond 1 - low with a negative advantage
        (0.79, 1.0, False),
    ],
)
def test_clipping_engages_exactly_beyond_the_range(
    ratio: float, advantage: float, clipped: bool
) -> None:
    old = torch.zeros(1, 1, dtype=torch.float64)
    new = old + math.log(ratio)
    loss, was_clipped = clipped_surrogate(new, old, torch.tensor([advantage]), 0.2, 0.2)
    assert bool(was_clipped.item()) is clipped
    bound = min(max(ratio, 0.8), 1.2)
    expected = max(-advantage * ratio, -advantage * bound)
    assert loss.item() == pytest.approx(expected)


def test_clip_high_is_separate() -> None:
    old = torch.zeros(1, 1, dtype=torch.float64)
    new = old + math.log(1.25)
    _, clipped = clipped_surrogate(new, old, torch.tensor([1.0]), 0.2, 0.28)
    assert clipped.item() == 0.0


def test_kl_estimators_by_hand() -> None:
    p = torch.tensor([[-1.0, -2.0]])
    q = torch.tensor([[-1.5, -2.0]])
    d = -0.5  # log q/p at the first token
    assert kl_penalty(p, q, "k1")[0].tolist() == pytest.approx([0.5, 0.0])
    assert kl_penalty(p, q, "k2")[0].tolist() == pytest.approx([0.125, 0.0])
    assert kl_penalty(p, q, "k3")[0].tolist() == pytest.approx([math.exp(d) - d - 1, 0.0])
    same = kl_penalty(p, p, "k3")
    assert same.abs().max().item() == 0.0


def test_aggregation_modes() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    norm = Normalizer(tokens=3, sequences=2)
    assert aggregate(loss, mask, "token-mean", norm).item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-mean", norm).item() == pytest.approx(
        (1.5 + 4.0) / 2
    )
    assert aggregate(loss, mask, "seq-sum-norm", norm, constant=10).item() == pytest.approx(7 / 20)


def test_micro_batch_shares_add_up_to_the_whole() -> None:
    torch.manual_seed(0)
    loss, mask = torch.rand(6, 5), (torch.rand(6, 5) > 0.3).float()
    norm = Normalizer(tokens=float(mask.sum()), sequences=6)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-sum-norm"):
        whole = aggregate(loss, mask, mode, norm, 4.0)
        parts = aggregate(loss[:2], mask[:2], mode, norm, 4.0) + aggregate(
            loss[2:], mask[2:], mode, norm, 4.0
        )
        assert parts.item() == pytest.approx(whole.item())


def test_entropy_of_uniform_and_peaked() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert entropy(logits)[0].tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)


def test_kl_beta_zero_needs_no_reference() -> None:
    logp = torch.zeros(1, 2, requires_grad=True)
    mask = torch.ones(1, 2)
    config = GRPOConfig(kl_beta=0.0)
    loss, sums = grpo_loss(logp, logp.detach(), None, torch.ones(1), mask, config, Normalizer(2, 1))
    assert "kl" not in sums and loss.item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logp, logp.detach(), None, torch.ones(1), mask, GRPOConfig(), Normalizer(2, 1))


def _policy_loss(config: GRPOConfig, logp: torch.Tensor, engine: torch.Tensor) -> tuple:
    mask, adv = torch.ones_like(logp), torch.tensor([2.0])
    norm = Normalizer(tokens=float(mask.sum()), sequences=1)
    return grpo_loss(logp, engine, None, adv, mask, config, norm)


def test_old_logprobs_from_the_learner_or_the_engine() -> None:
    """`learner`: the ratio is exactly 1 (one update per batch), so the loss is -A per token
    and the gradient is -A * d logp, whatever the engine reported; `engine`: ratio p / p_engine."""
    logp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_()
    engine = torch.log(torch.tensor([[0.4, 0.5]]))
    loss, sums = _policy_loss(GRPOConfig(kl_beta=0.0), logp, engine)
    assert loss.item() == pytest.approx(-2.0) and sums["clip_fraction"].item() == 0.0
    loss.backward()
    assert logp.grad is not None and logp.grad[0].tolist() == pytest.approx([-1.0, -1.0])
    config = GRPOConfig(kl_beta=0.0, old_logprobs="engine")
    loss, sums = _policy_loss(config, logp.detach(), engine)
    # ratios 1.25 (clipped to 1.2 for a positive advantage) and 0.5 -> -(2*1.2 + 2*0.5) / 2
    assert loss.item() == pytest.approx(-(2 * 1.2 + 2 * 0.5) / 2)
    assert sums["clip_fraction"].item() == 1.0


def test_truncated_importance_sampling_weights_by_hand() -> None:
    old = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    engine = torch.log(torch.tensor([[0.25, 0.4, 0.3]]))
    weights, capped = tis_weights(old, engine, cap=1.5)
    assert weights[0].tolist() == pytest.approx([1.5, 0.5, 1.0])  # 2.0 is capped at 1.5
    assert capped.tolist() == [[1.0, 0.0, 0.0]]


def test_truncated_importance_sampling_scales_each_tokens_loss() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.2]])).requires_grad_()
    engine = torch.log(torch.tensor([[0.25, 0.4]]))
    config = GRPOConfig(kl_beta=0.0, tis_cap=1.5)
    loss, sums = _policy_loss(config, logp, engine)
    assert loss.item() == pytest.approx(-2.0 * (1.5 + 0.5) / 2)
    assert sums["tis_weight"].item() == pytest.approx(2.0)
    assert sums["tis_capped"].item() == 1.0
    loss.backward()  # the weights are constants: d/dlogp = -A * w / tokens
    assert logp.grad is not None and logp.grad[0].tolist() == pytest.approx([-1.5, -0.5])


def test_truncated_importance_sampling_needs_the_learners_old_logprobs() -> None:
    with pytest.raises(ValueError, match="tis_cap"):
        GRPOConfig(old_logprobs="engine", tis_cap=2.0)


@pytest.mark.parametrize(
    ("mask", "stages"),
    [
        ([0, 0, 1, 1, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0, 2, 2, 0]),
        ([1, 0, 1, 0, 1], [1, 0, 2, 0, 2]),  # later runs all belong to stage 2
        ([0, 1, 1], [0, 1, 1]),  # a single-stage reply (fallback) is stage 1
        ([0, 0], [0, 0]),
    ],
)
def test_sampled_stages(mask: list[int], stages: list[int]) -> None:
    assert sampled_stages(mask) == stages
