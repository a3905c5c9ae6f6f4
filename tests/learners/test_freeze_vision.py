"""`freeze_vision`: a step leaves the vision encoder's weights as they were and trains its patch
merger and the language model (one learner rank in this process, gloo)."""

from __future__ import annotations

from pathlib import Path

from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig
from learners.group import normalizer
from learners.worker import LearnerWorker


def test_a_step_keeps_the_vision_encoder_and_trains_the_rest(
    tiny_model_dir: Path, train_rows: list[TrainRow]
) -> None:
    config = LearnerConfig(
        model=str(tiny_model_dir), micro_batch_size=2, optim=OptimConfig(lr=1e-3),
        freeze_vision=True,
    )  # fmt: skip
    worker = LearnerWorker(config, rank=0, world_size=1)
    worker.setup(worker.rendezvous())
    try:
        before = dict(worker.named_parameters() or [])
        worker.step(train_rows, normalizer(train_rows))
        after = dict(worker.named_parameters() or [])
    finally:
        worker.shutdown()
    changed = {name for name in before if abs(after[name] - before[name]).max() > 0}
    encoder = {n for n in before if "visual." in n and "merger." not in n}
    assert encoder and not encoder & changed, sorted(encoder & changed)
    assert any("merger." in n for n in changed), "the patch merger did not train"
    assert any(n.startswith("model.layers.") for n in changed), "the language model did not train"
