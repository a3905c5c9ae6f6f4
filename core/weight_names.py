"""Parameter names of Qwen2.5-VL in its two spellings.

transformers 5 names the modules in memory `model.language_model.*` and `model.visual.*`;
checkpoints on disk, and vLLM's loader, use `model.*` and `visual.*`. A tied `lm_head.weight`
is absent from checkpoints. Weight transfer always speaks checkpoint names: the learner
writes them (`learners.weight_export.checkpoint_parameters`) and engines read them as they are.
"""

from __future__ import annotations

_IN_MEMORY_TO_CHECKPOINT = (("model.language_model.", "model."), ("model.visual.", "visual."))


def to_checkpoint_name(name: str) -> str:
    """`model.language_model.layers.0...` -> `model.layers.0...`; checkpoint names unchanged."""
    for memory, checkpoint in _IN_MEMORY_TO_CHECKPOINT:
        if name.startswith(memory):
            return checkpoint + name[len(memory) :]
    return name


def module_of(name: str) -> str:
    """The transformer block (or top-level module) a parameter belongs to, e.g.
    `model.layers.3` or `visual.blocks.0`; buckets never split one, because vLLM fuses the
    projections inside a block (q/k/v, gate/up) and processes a block once all of it arrived."""
    parts = to_checkpoint_name(name).split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "blocks") and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2])
    return ".".join(parts[:-1])
