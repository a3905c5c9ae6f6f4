"""The learner group on a real local Ray: FSDP2 over gloo between learner actors.

Sharding is exact (2 ranks = 1 rank on the same batch), resuming from a checkpoint is exact,
and after a step every rollout worker (real vLLM CPU engines) serves the new weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
from safetensors.torch import load_file

from actors.engine import EngineConfig, TokenPrompt
from actors.episode import EpisodeConfig
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig
from core.trajectory import Trajectory
from jobs.learner import make_learner_group
from jobs.rollout import RolloutConfig, make_rollout_pool
from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig
from learners.group import LearnerGroup

pytestmark = pytest.mark.integration
RANK = WorkerResources(num_cpus=0.25)
MODEL_FILE = "model.safetensors"


@pytest.fixture(scope="module")
def config(tiny_model_dir: Path) -> LearnerConfig:
    return LearnerConfig(
        model=str(tiny_model_dir), micro_batch_size=1, optim=OptimConfig(lr=1e-3, warmup_steps=1)
    )


@pytest.fixture(scope="module")
def rows(train_rows: list[TrainRow]) -> list[TrainRow]:
    return train_rows


def weights(group: LearnerGroup) -> dict[str, np.ndarray]:
    """Every rank's own rows, fetched from the object store and assembled."""
    return {name: t.numpy() for name, t in group.sharded(0).tensors()}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(a[n] - b[n]).max()) for n in a)


def test_two_ranks_step_exactly_like_one(
    local_ray: None, config: LearnerConfig, rows: list[TrainRow]
) -> None:
    results = []
    for world_size in (2, 1):
        group = make_learner_group(config, world_size, RANK)
        before = weights(group)
        metrics = group.step(rows[:3])  # odd: one rank also runs a masked filler row
        after = weights(group)
        # Each rank writes its own shard rows into the shared file (`auto` on one node makes
        # one): it equals every rank's rows assembled from the object store.
        shared = group.export_weights(1).shared
        assert shared is not None
        assert max_diff({n: t.numpy() for n, t in shared.tensors()}, after) == 0.0
        # ... under the names of the checkpoint on disk: an engine loads the file as it is.
        assert set(load_file(shared.path)) == set(load_file(Path(config.model) / MODEL_FILE))
        results.append((after, metrics))
        group.shutdown()
        assert not Path(shared.path).exists()  # the group removes its files
    (two, metrics2), (one, metrics1) = results
    assert max_diff(two, before) > 1e-4  # the step did move the weights
    assert max_diff(two, one) < 1e-5
    assert metrics2["learner/loss"] == pytest.approx(metrics1["learner/loss"], abs=1e-6)


def test_resume_from_a_checkpoint_is_exact(
    local_ray: None, config: LearnerConfig, rows: list[TrainRow], tmp_path: Path
) -> None:
    group = make_learner_group(config, 2, RANK)
    for _ in range(3):
        group.step(rows)
    group.save(tmp_path / "step3", {"data_cursor": 12})
    paths, after = [], []
    for version in range(3):  # steps 4, 5 and 6
        group.step(rows)
        after.append(weights(group))
        shared = group.export_weights(version).shared
        assert shared is not None
        assert max_diff({n: t.numpy() for n, t in shared.tensors()}, after[-1]) == 0.0
        paths.append(shared.path)
    # The two files take turns: the one reused for version 2 holds step 6, not its step 4.
    assert paths[2] == paths[0] != paths[1]
    group.shutdown()

    resumed = make_learner_group(config, 2, RANK)
    assert resumed.load(tmp_path / "step3") == {"data_cursor": 12}
    for _ in range(2):
        resumed.step(rows)
    assert max_diff(weights(resumed), after[1]) == 0.0  # step 5
    resumed.shutdown()


def test_after_a_step_every_rollout_worker_serves_the_new_weights(
    local_ray: None,
    config: LearnerConfig,
    rows: list[TrainRow],
    episode_trajectories: list[Trajectory],
    tiny_model_dir: Path,
) -> None:
    group = make_learner_group(config, 2, RANK)
    pool = make_rollout_pool(
        RolloutConfig(
            engine=EngineConfig(model=str(tiny_model_dir), max_model_len=2048, weight_bucket_mb=1),
            episode=EpisodeConfig(group_size=1),
            pool=PoolConfig(min_workers=2, max_workers=2, request_cluster_resources=False),
            resources=WorkerResources(num_cpus=0.5),
        )
    )
    pool.wait_ready()
    t = episode_trajectories[0]
    prompt = TokenPrompt(t.token_ids, t.images)
    old = [ray.get(s.handle.score.remote([prompt]))[0].logprobs for s in pool.slots.values()]
    sampled = [i for i, m in enumerate(t.loss_mask) if m]
    # version 1 through shared memory, version 2 through the object store (each worker assembles
    # the ranks' rows), version 3 `auto` (the default): both, and each worker here maps the
    # file, which its node wrote
    for version, transport in ((1, "shm"), (2, "object_store"), (3, "auto")):
        group.step(rows)
        group.transport = transport
        exported = group.export_weights(version)
        assert (transport == "object_store") == (getattr(exported, "shared", exported) is None)
        pool.publish_weights(version, exported)
        [learner] = group.logprobs([TrainRow.from_trajectory(t, 0.0)])
        for slot, before in zip(pool.slots.values(), old, strict=True):
            assert ray.get(slot.handle.ready.remote()) == version  # the version it serves
            via = "object store" if transport == "object_store" else "shared memory"
            assert ray.get(slot.handle.weights_source.remote()) == (version, via)
            [served] = ray.get(slot.handle.score.remote([prompt]))
            assert max(abs(a - b) for a, b in zip(served.logprobs, before, strict=True)) > 1e-3
            # the engine scores the expanded sequence; compare at the sampled tokens
            engine = _per_token(served.logprobs, t, pool_image_pad(tiny_model_dir))
            assert max(abs(engine[i] - learner[i]) for i in sampled) < 1e-3
        old = [ray.get(s.handle.score.remote([prompt]))[0].logprobs for s in pool.slots.values()]
    pool.shutdown()
    group.shutdown()


def pool_image_pad(model: Path) -> int:
    from transformers import AutoTokenizer

    return int(AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("<|image_pad|>"))


def _per_token(expanded: list[float], t: Trajectory, image_pad: int) -> list[float]:
    from core.tokens import expanded_positions

    where = expanded_positions(t.token_ids, image_pad, [t.coarse_tokens, t.crop_tokens])
    return [0.0] + [expanded[where[i] - 1] for i in range(1, len(t.token_ids))]
