"""The GPU path of the learner: NCCL process group, FSDP2 with bf16 compute and fp32 reduction.

Skipped without CUDA (this project's CI machines have none); run on a GPU machine with
`bash scripts/test.sh -m gpu`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.trajectory import Trajectory
from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig
from learners.group import normalizer
from learners.worker import LearnerWorker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_bf16_fsdp2_step_on_nccl(
    tiny_model_dir: Path, episode_trajectories: list[Trajectory]
) -> None:
    config = LearnerConfig(model=str(tiny_model_dir), optim=OptimConfig(lr=1e-3))
    worker = LearnerWorker(config, rank=0, world_size=1)
    worker.setup(worker.rendezvous())
    try:
        assert torch.distributed.get_backend() == "nccl"
        rows = [TrainRow.from_trajectory(t, 1.0 - i) for i, t in enumerate(episode_trajectories)]
        before = dict(worker.named_parameters() or [])
        metrics = worker.step(rows, normalizer(rows))
        after = dict(worker.named_parameters() or [])
        assert all(p.dtype == torch.float32 for p in worker.policy.parameters())  # fp32 master
        assert max(abs(after[n] - before[n]).max() for n in before) > 0
        assert torch.isfinite(torch.tensor(metrics["learner/loss"]))
        assert metrics["learner/logprob_mismatch_max"] < 0.1  # bf16 compute vs fp32 rollout
    finally:
        worker.shutdown()
