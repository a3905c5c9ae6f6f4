"""The learner worker: one rank of an FSDP2 learner group (a plain class; `jobs/` makes it an
actor). Each rank holds a shard of the policy (and of the frozen reference when KL is on),
trains on its share of a step's rows with gradient accumulation, and joins the collectives
that gather full weights for export and checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from core.sharded_weights import ParameterSpec
from core.shm_files import release
from learners.batch import MicroBatch, TrainRow, micro_batch
from learners.checkpoint import RankState, export_hf, load_sharded, save_sharded
from learners.config import LearnerConfig, OptimConfig
from learners.grpo import Normalizer, aggregate, entropy, grpo_loss, token_logprobs
from learners.weight_export import (
    CopyPlan,
    ShardRows,
    checkpoint_parameters,
    copy_plan,
    create_shared,
    full_tensors,
    own_rows,
    write_shards,
)

TIS_SUMS = ("tis_weight", "tis_capped")  # metric sums that only truncated IS fills

logger = logging.getLogger(__name__)


class LearnerWorker:
    """Construct on every rank, then `setup` each with rank 0's `rendezvous()` address."""

    def __init__(self, config: LearnerConfig, rank: int, world_size: int) -> None:
        self.config, self.rank, self.world_size = config, rank, world_size
        self._plans: dict[str, CopyPlan] = {}  # shared weights file -> where this rank writes

    def rendezvous(self) -> str:
        """`host:port` on this node where rank 0 will accept the group (ask rank 0)."""
        return f"{_node_ip()}:{_free_port()}"

    def setup(self, address: str) -> int:
        """Join the process group at `address` and load the sharded models."""
        from transformers import AutoProcessor

        config, rank, world_size = self.config, self.rank, self.world_size
        on_gpu = torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
        if not on_gpu:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        dist.init_process_group(
            "nccl" if on_gpu else "gloo",
            init_method=f"tcp://{address}",
            rank=rank,
            world_size=world_size,
        )
        torch.manual_seed(config.seed)
        mixed = on_gpu if config.mixed_precision is None else config.mixed_precision
        self.export_dtype = export_dtype(config, mixed)
        self.policy = _load_sharded(config, mixed, trainable=True)
        self.reference = None
        if config.grpo.kl_beta > 0 and config.objective == "grpo":
            self.reference = _load_sharded(config, mixed, trainable=False)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=config.optim.lr,
            betas=config.optim.betas,
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(config.optim, step)
        )
        processor = AutoProcessor.from_pretrained(config.model)
        self.image_processor = processor.image_processor
        self.image_token_id = int(self.policy.config.image_token_id)
        tokenizer = processor.tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id or tokenizer.eos_token_id)
        self.step_count = 0
        return rank

    def step(self, rows: Sequence[TrainRow], norm: Normalizer) -> dict[str, float]:
        """One optimizer step on this rank's rows; `norm` counts the whole step's rows/tokens."""
        self.policy.train()
        size = self.config.micro_batch_size
        sums = dict.fromkeys(("loss", "clip_fraction", "kl", "entropy", *TIS_SUMS), 0.0)
        mismatch = Mismatch()
        for start in range(0, len(rows), size):
            batch = self._micro_batch(rows[start : start + size])
            loss, parts, logprobs_BT, logits_BTV = self._loss(batch, norm)
            # FSDP averages gradients over ranks; each rank's loss is its share of the sum.
            (loss * self.world_size).backward()
            with torch.no_grad():
                mismatch.add(logprobs_BT, batch)
                sums["entropy"] += float((entropy(logits_BTV) * batch.mask_BT).sum())
            sums["loss"] += float(loss.detach())
            for name, value in parts.items():
                sums[name] += float(value)
            del logits_BTV
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.policy.parameters(), self.config.optim.max_grad_norm
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = float(self.scheduler.get_last_lr()[0])
        self.scheduler.step()
        self.step_count += 1
        return self._reduce(sums, mismatch, norm, float(_full(grad_norm)), lr)

    @torch.no_grad()
    def logprobs(self, rows: Sequence[TrainRow]) -> list[list[float]]:
        """The policy's logprob of every token of each row (0 for the first), as the engine
        reports them: the learner's view of the rollout's numbers."""
        self.policy.eval()
        out: list[list[float]] = []
        for start in range(0, len(rows), self.config.micro_batch_size):
            chunk = rows[start : start + self.config.micro_batch_size]
            batch = self._micro_batch(chunk)
            logprobs_BT = self._forward_logprobs(self.policy, batch)[0].cpu()
            for b, positions in enumerate(batch.positions):
                out.append([0.0] + [float(logprobs_BT[b, p - 1]) for p in positions[1:]])
        return out

    def named_parameters(self) -> list[tuple[str, torch.Tensor]] | None:
        """Full fp32 weights (checkpoint names, CPU) on rank 0; None elsewhere. Every rank
        must call it: each parameter is gathered with a collective."""
        return full_tensors(self.policy, self.rank, torch.float32)

    def node_id(self) -> str:
        """The Ray node this rank runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def parameter_specs(self) -> list[ParameterSpec]:
        """Name, export dtype and global shape of every parameter, in export order."""
        return [
            ParameterSpec(name, self.export_dtype, tuple(p.shape))
            for name, p in checkpoint_parameters(self.policy)
        ]

    def own_rows(self) -> ShardRows:
        """This rank's shard rows in the export dtype, for the object store (no collective)."""
        return own_rows(self.policy, self.rank, self.export_dtype)

    def create_shared(self) -> tuple[str, int, str]:
        """(path, data start, node id) of a new shared weights file on this rank's node."""
        return *create_shared(self.policy, self.export_dtype), self.node_id()

    def write_shared(self, path: str, data_start: int) -> float:
        """Copy this rank's shard rows into the shared file; returns the seconds it took."""
        if path not in self._plans:
            self._plans[path] = copy_plan(
                self.policy, path, data_start, self.rank, self.export_dtype
            )
        start = time.perf_counter()
        write_shards(self._plans[path])
        return time.perf_counter() - start

    def remove_files(self, paths: list[str]) -> None:
        """Delete files on this rank's node (shared weights no reader needs any more)."""
        for path in paths:
            self._plans.pop(path, None)
            release(path)

    def save(self, path: str, extra: dict[str, Any]) -> None:
        save_sharded(self._rank_state(), self.step_count, Path(path), extra)

    def load(self, path: str) -> dict[str, Any]:
        self.step_count, extra = load_sharded(self._rank_state(), Path(path))
        return extra

    def export_hf(self, out: str) -> None:
        """A plain HF model folder of the current weights, in the export dtype."""
        named = full_tensors(self.policy, self.rank, self.export_dtype)
        export_hf(named, Path(self.config.model), Path(out))

    def _rank_state(self) -> RankState:
        return RankState(self.policy, self.optimizer, self.scheduler, self.rank, self.world_size)

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _micro_batch(self, rows: Sequence[TrainRow]) -> MicroBatch:
        batch = micro_batch(rows, self.image_processor, self.image_token_id, self.pad_token_id)
        if self.device is None:
            return batch
        return MicroBatch(
            {k: v.to(self.device) for k, v in batch.inputs.items()},
            batch.mask_BT.to(self.device),
            batch.engine_logprobs_BT.to(self.device),
            batch.stage_BT.to(self.device),
            batch.advantages_B.to(self.device),
            batch.positions,
        )

    def _forward_logprobs(self, model: Any, batch: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits_BTV = model(**batch.inputs).logits[:, :-1]
        targets_BT = batch.inputs["input_ids"][:, 1:]
        return token_logprobs(logits_BTV, targets_BT), logits_BTV

    def _loss(
        self, batch: MicroBatch, norm: Normalizer
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        logprobs_BT, logits_BTV = self._forward_logprobs(self.policy, batch)
        if self.config.objective == "sft":  # imitation: the mean NLL of the masked tokens
            loss = aggregate(-logprobs_BT, batch.mask_BT, "token-mean", norm)
            return loss, {}, logprobs_BT.detach(), logits_BTV.detach()
        ref_BT = None
        if self.reference is not None:
            with torch.no_grad():
                ref_BT = self._forward_logprobs(self.reference, batch)[0]
        loss, parts = grpo_loss(
            logprobs_BT,
            batch.engine_logprobs_BT,
            ref_BT,
            batch.advantages_B,
            batch.mask_BT,
            self.config.grpo,
            norm,
        )
        return loss, parts, logprobs_BT.detach(), logits_BTV.detach()

    def _reduce(
        self,
        sums: dict[str, float],
        mismatch: Mismatch,
        norm: Normalizer,
        grad_norm: float,
        lr: float,
    ) -> dict[str, float]:
        """Step metrics over all ranks (sums are over sampled tokens)."""
        names = sorted(sums)
        totals = torch.tensor([sums[n] for n in names], dtype=torch.float64)
        dist.all_reduce(totals)
        values = dict(zip(names, totals.tolist(), strict=True))
        tokens = max(norm.tokens, 1.0)
        metrics = {
            "learner/loss": values["loss"],
            "learner/clip_fraction": values["clip_fraction"] / tokens,
            "learner/kl": values["kl"] / tokens,
            "learner/entropy": values["entropy"] / tokens,
            "learner/grad_norm": grad_norm,
            "learner/lr": lr,
            **mismatch.reduced(),
        }
        if self.config.objective == "grpo" and self.config.grpo.tis_cap is not None:
            metrics["learner/tis_weight_mean"] = values["tis_weight"] / tokens
            metrics["learner/tis_capped_fraction"] = values["tis_capped"] / tokens
        return metrics


class Mismatch:
    """|learner - engine| logprob of the sampled tokens, per stage: sums, counts and maxima
    accumulated over a step's micro-batches, then reduced over ranks."""

    def __init__(self) -> None:
        self.sum_S, self.count_S, self.max_S = torch.zeros(2), torch.zeros(2), torch.zeros(2)

    def add(self, logprobs_BT: torch.Tensor, batch: MicroBatch) -> None:
        diff_BT = (logprobs_BT - batch.engine_logprobs_BT).abs().cpu()
        stage_BT = batch.stage_BT.cpu()
        for s in range(2):
            in_stage = stage_BT == s + 1
            self.sum_S[s] += diff_BT[in_stage].sum()
            self.count_S[s] += in_stage.sum()
            if in_stage.any():
                self.max_S[s] = torch.maximum(self.max_S[s], diff_BT[in_stage].max())

    def reduced(self) -> dict[str, float]:
        """Means and maxima over all ranks, overall and per stage."""
        sums = torch.cat([self.sum_S, self.count_S]).double()
        dist.all_reduce(sums)
        worst = self.max_S.clone()
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        total, count = sums[:2], sums[2:]
        out = {
            "learner/logprob_mismatch_mean": float(total.sum() / count.sum().clamp(min=1)),
            "learner/logprob_mismatch_max": float(worst.max()),
        }
        for s in range(2):
            out[f"learner/logprob_mismatch_stage{s + 1}_mean"] = float(
                total[s] / count[s].clamp(min=1)
            )
            out[f"learner/logprob_mismatch_stage{s + 1}_max"] = float(worst[s])
        return out


def export_dtype(config: LearnerConfig, mixed_precision: bool) -> torch.dtype:
    """The dtype weights leave the learner in: `learner.export_dtype`, or by default the
    training dtype (bf16 under mixed precision, else fp32)."""
    if config.export_dtype == "auto":
        return torch.bfloat16 if mixed_precision else torch.float32
    return getattr(torch, config.export_dtype)


def lr_factor(optim: OptimConfig, step: int) -> float:
    """Multiplier of `optim.lr` at `step` (0-based): warm-up, then the schedule."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    span = max(1, optim.total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    if optim.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _load_sharded(config: LearnerConfig, mixed: bool, trainable: bool) -> Any:
    """The model with each vision block, each decoder layer and the root sharded (FSDP2)."""
    from transformers import AutoModelForImageTextToText

    model = cast(
        Any, AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.float32)
    )
    if torch.cuda.is_available():
        model.to(torch.cuda.current_device())
    if trainable and config.activation_checkpointing:
        model.gradient_checkpointing_enable()
    precision = MixedPrecisionPolicy()  # parameters' own dtype (fp32)
    if mixed:
        precision = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in [*model.model.visual.blocks, *model.model.language_model.layers]:
        fully_shard(block, mp_policy=precision)
    fully_shard(model, mp_policy=precision)
    model.requires_grad_(trainable)
    if trainable and config.freeze_vision:
        visual = model.model.visual
        visual.requires_grad_(False)
        visual.merger.requires_grad_(True)
    if not trainable:
        model.eval()
    return model


def _node_ip() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
