"""One learner rank in this process (a group of one, gloo): the loss mask, logprobs against
the transformers engine, the schedule, and an HF export that transformers loads back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from core.sharded_weights import assemble
from core.weight_names import to_checkpoint_name
from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig
from learners.group import normalizer
from learners.worker import LearnerWorker, export_dtype, lr_factor

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path) -> Iterator[LearnerWorker]:
    config = LearnerConfig(
        model=str(tiny_model_dir), micro_batch_size=2, optim=OptimConfig(lr=1e-3)
    )
    worker = LearnerWorker(config, rank=0, world_size=1)
    worker.setup(worker.rendezvous())
    yield worker
    worker.shutdown()


@pytest.fixture(scope="module")
def rows(train_rows: list[TrainRow]) -> list[TrainRow]:
    return train_rows


def test_learner_logprobs_match_the_engine(worker: LearnerWorker, rows: list[TrainRow]) -> None:
    for row, logprobs in zip(rows, worker.logprobs(rows), strict=True):
        sampled = [i for i, m in enumerate(row.loss_mask) if m]
        assert sampled
        worst = max(abs(logprobs[i] - row.logprobs[i]) for i in sampled)
        assert worst < TOLERANCE


def _loss_and_grads(worker: LearnerWorker, rows: list[TrainRow], norm) -> tuple[float, dict]:
    worker.policy.zero_grad(set_to_none=True)
    batch = worker._micro_batch(rows)
    loss, *_ = worker._loss(batch, norm)
    loss.backward()
    grads = {n: p.grad.full_tensor().clone() for n, p in worker.policy.named_parameters()}
    worker.policy.zero_grad(set_to_none=True)
    return loss.item(), grads


def test_masked_tokens_change_neither_loss_nor_gradients(
    worker: LearnerWorker, rows: list[TrainRow]
) -> None:
    norm = normalizer(rows[:2])
    loss, grads = _loss_and_grads(worker, rows[:2], norm)
    # Not the loss: at ratio 1, advantages +1 and -1 on rows of equal length cancel it exactly.
    assert max(g.abs().max().item() for g in grads.values()) > 0
    # Garbage where the mask is 0: the old logprobs of prompt and image-placeholder tokens...
    noisy = [
        dataclasses.replace(
            r, logprobs=[lp if m else 123.0 for lp, m in zip(r.logprobs, r.loss_mask, strict=True)]
        )
        for r in rows[:2]
    ]
    # ...a row with nothing sampled, and a masked token appended after the sampled ones.
    tail = dataclasses.replace(
        noisy[1],
        token_ids=[*noisy[1].token_ids, 7],
        loss_mask=[*noisy[1].loss_mask, 0],
        logprobs=[*noisy[1].logprobs, -5.0],
    )
    changed = [noisy[0], tail, rows[2].masked()]
    loss2, grads2 = _loss_and_grads(worker, changed, norm)
    assert loss2 == pytest.approx(loss, abs=1e-7)
    assert max((grads[n] - grads2[n]).abs().max().item() for n in grads) < 1e-7
    # ...while a sampled token's advantage does change them.
    flipped = [dataclasses.replace(rows[0], advantage=-rows[0].advantage), rows[1]]
    loss3, _ = _loss_and_grads(worker, flipped, norm)
    assert abs(loss3 - loss) > 1e-4


def test_a_step_changes_the_weights_and_reports_metrics(
    worker: LearnerWorker, rows: list[TrainRow]
) -> None:
    before = dict(worker.named_parameters() or [])
    metrics = worker.step(rows, normalizer(rows))
    after = dict(worker.named_parameters() or [])
    assert max(abs(after[n] - before[n]).max() for n in before) > 0
    assert metrics["learner/logprob_mismatch_max"] < TOLERANCE  # rollout weights = learner's
    for stage in (1, 2):  # both turns' sampled tokens are measured, each on its own
        assert 0 < metrics[f"learner/logprob_mismatch_stage{stage}_max"] < TOLERANCE
        assert metrics[f"learner/logprob_mismatch_stage{stage}_mean"] < TOLERANCE
    assert metrics["learner/clip_fraction"] == 0.0  # learner's own old logprobs: ratio 1
    assert metrics["learner/kl"] == pytest.approx(0.0, abs=1e-6)  # first step: policy = reference
    assert metrics["learner/entropy"] > 0
    assert metrics["learner/grad_norm"] > 0
    assert worker.step_count == 1


def test_export_is_a_plain_hf_checkpoint(
    worker: LearnerWorker, rows: list[TrainRow], tmp_path: Path
) -> None:
    worker.export_hf(str(tmp_path / "hf"))
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    mine = dict(worker.named_parameters() or [])  # checkpoint names, as the file has them
    theirs = {to_checkpoint_name(n): p for n, p in loaded.named_parameters()}
    assert set(mine) == set(theirs) == set(load_file(tmp_path / "hf" / "model.safetensors"))
    assert max((mine[n] - theirs[n].detach()).abs().max() for n in mine) == 0.0


def test_weights_leave_in_the_export_dtype(worker: LearnerWorker, tmp_path: Path) -> None:
    """bf16 out (the training dtype under mixed precision) from fp32 master weights: the HF
    export says so in its config, and a rank's own rows assemble into the same tensors."""
    assert export_dtype(worker.config, mixed_precision=False) == torch.float32
    assert export_dtype(worker.config, mixed_precision=True) == torch.bfloat16
    bf16 = worker.config.model_copy(update={"export_dtype": "bfloat16"})
    assert export_dtype(bf16, mixed_precision=False) == torch.bfloat16
    worker.export_dtype = torch.bfloat16  # as setup sets it from that config
    try:
        master = dict(worker.named_parameters() or [])
        worker.export_hf(str(tmp_path / "hf"))
        specs = worker.parameter_specs()
        assembled = dict(assemble(specs, [worker.own_rows()]))
    finally:
        worker.export_dtype = torch.float32
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    assert [s.name for s in specs] == list(master) and set(exported) == set(master)
    for name, tensor in master.items():
        assert torch.equal(exported[name], tensor.to(torch.bfloat16))
        assert torch.equal(assembled[name], exported[name])
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf", dtype="auto")
    assert loaded.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("schedule", "warmup", "factors"),
    [
        ("constant", 2, [0.5, 1.0, 1.0, 1.0]),
        ("linear", 0, [1.0, 0.75, 0.5, 0.25]),
        (
            "cosine",
            0,
            [1.0, pytest.approx(0.853553, abs=1e-6), 0.5, pytest.approx(0.146447, abs=1e-6)],
        ),
    ],
)
def test_learning_rate_schedule(schedule: str, warmup: int, factors: list) -> None:
    optim = OptimConfig(schedule=schedule, warmup_steps=warmup, total_steps=4)
    assert [lr_factor(optim, step) for step in range(4)] == factors
