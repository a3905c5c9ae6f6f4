"""The rollout pool on a real local Ray with real vLLM CPU engines in the workers.

Engines take about a minute to start as Ray actors on 2 cores, so one 2-worker pool serves
the module's tests in order; the autoscaling test builds its own 1-to-2 pool afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import torch
from safetensors.torch import load_file

from actors.engine import EngineConfig, TokenPrompt
from actors.episode import EpisodeConfig
from actors.hf_engine import HFEngine
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig, RolloutPool
from core.sample import Sample
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from core.tokens import expanded_positions
from core.trajectory import Trajectory, write_trajectories
from jobs.rollout import RolloutConfig, make_rollout_pool

pytestmark = pytest.mark.integration
G = 4
TOLERANCE = 1e-3


def _config(model: Path, pool: PoolConfig) -> RolloutConfig:
    return RolloutConfig(
        engine=EngineConfig(model=str(model), max_model_len=2048, weight_bucket_mb=1),
        episode=EpisodeConfig(
            coarse_max_tokens=DEMO_COARSE_TOKENS,
            crop_max_tokens=DEMO_COARSE_TOKENS,
            group_size=G,
            max_new_tokens=24,
        ),
        pool=pool,
        resources=WorkerResources(num_cpus=0.5),
    )


@pytest.fixture(scope="module")
def pool(local_ray: None, tiny_model_dir: Path) -> Iterator[RolloutPool]:
    config = PoolConfig(min_workers=2, max_workers=2, chunk_size=2, request_cluster_resources=False)
    pool = make_rollout_pool(_config(tiny_model_dir, config))
    pool.wait_ready()
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(EngineConfig(backend="hf", model=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return list(generate(SyntheticConfig(), num=6, seed=11))


def _check_policy_tokens(t: Trajectory, image_pad: int) -> None:
    """The mask covers exactly the two replies: stage 1's in the prompt, stage 2's at the end."""
    assert len(t.loss_mask) == len(t.token_ids) == len(t.logprobs)
    masked = [tok for tok, m in zip(t.token_ids, t.loss_mask, strict=True) if m]
    assert image_pad not in masked
    assert t.loss_mask[-1] == 1 or t.finish_reasons[1] is None  # ends with the policy's reply
    assert t.token_ids.count(image_pad) == 2
    first_pad = t.token_ids.index(image_pad)
    assert not any(t.loss_mask[: first_pad + 1])  # the system and first user turn are never trained
    assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.loss_mask, strict=True) if not m)
    assert all(lp <= 0.0 for lp, m in zip(t.logprobs, t.loss_mask, strict=True) if m)


def test_pool_returns_every_group_in_order(
    pool: RolloutPool, samples: list[Sample], tiny_processor, tmp_path: Path
) -> None:
    trajectories = pool.run(samples)
    assert len(trajectories) == len(samples) * G
    assert [(t.prompt_id, t.group_index) for t in trajectories] == [
        (s.id, g) for s in samples for g in range(G)
    ]
    image_pad = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for t in trajectories:
        assert t.failure is None
        _check_policy_tokens(t, image_pad)
        width, height = t.original_size
        assert t.crop_box is not None
        x1, y1, x2, y2 = t.crop_box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        grids = tiny_processor.image_processor(images=t.images, return_tensors="pt")
        counts = [int(g.prod()) // 4 for g in grids["image_grid_thw"]]
        assert counts == [t.coarse_tokens, t.crop_tokens]
    path = tmp_path / "trajectories.parquet"
    assert write_trajectories(path, trajectories) == len(trajectories)
    assert pq.read_table(path).column("prompt_id").to_pylist()[::G] == [s.id for s in samples]


def test_engine_logprobs_match_transformers(
    pool: RolloutPool, samples: list[Sample], reference: HFEngine, tiny_processor
) -> None:
    image_pad = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for t in pool.run(samples[:2])[::3]:
        [scored] = reference.score([TokenPrompt(t.token_ids, t.images)])
        where = expanded_positions(t.token_ids, image_pad, [t.coarse_tokens, t.crop_tokens])
        for i, m in enumerate(t.loss_mask):
            if m:  # scored.logprobs[j] is the logprob of expanded token j + 1
                assert abs(scored.logprobs[where[i] - 1] - t.logprobs[i]) < TOLERANCE


def test_weight_update_reaches_every_worker(
    pool: RolloutPool, samples: list[Sample], reference: HFEngine, tiny_model_dir: Path
) -> None:
    [t] = [x for x in pool.run(samples[:1]) if x.group_index == 0]
    prompt = TokenPrompt(t.token_ids, t.images)
    generator = torch.Generator().manual_seed(1)
    weights = {
        n: w + 0.05 * torch.randn(w.shape, generator=generator)
        for n, w in load_file(tiny_model_dir / "model.safetensors").items()
    }
    pool.update_weights(7, weights.items())
    reference.update_weights(7, weights.items())
    [expected] = reference.score([prompt])
    for slot in pool.slots.values():
        [served] = ray.get(slot.handle.score.remote([prompt]))
        pairs = zip(served.logprobs, expected.logprobs, strict=True)
        assert max(abs(a - b) for a, b in pairs) < TOLERANCE
    assert {x.weight_version for x in pool.run(samples[:4])} == {7}


def test_bad_samples_give_failed_trajectories_not_crashes(
    pool: RolloutPool, samples: list[Sample]
) -> None:
    good = samples[0]
    bad_image = Sample(
        id="bad-image", image=b"not a png", question="q?", options=("a", "b"), answer="A"
    )
    no_question = Sample(id="no-question", image=good.image, question="  ", options=(), answer="x")
    trajectories = pool.run([bad_image, good, no_question])
    assert [t.prompt_id for t in trajectories[::G]] == ["bad-image", good.id, "no-question"]
    failures = {t.prompt_id: t.failure for t in trajectories}
    assert "cannot decode" in (failures["bad-image"] or "")
    assert failures["no-question"] == "empty question"
    assert failures[good.id] is None
    # The random policy rarely names a box: the fallback is recorded, not a failure.
    assert all(
        t.fallback is None or t.crop_box == (0, 0, *t.original_size)
        for t in trajectories
        if t.prompt_id == good.id
    )


def test_a_killed_worker_is_replaced_and_nothing_is_lost(
    pool: RolloutPool, samples: list[Sample]
) -> None:
    result: list[Trajectory] = []
    runner = threading.Thread(target=lambda: result.extend(pool.run(samples * 2)))
    runner.start()
    victim = next(iter(pool.slots.values()))
    deadline = time.monotonic() + 120
    while victim.outstanding == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.outstanding > 0, "the worker never got work"
    ray.kill(victim.handle)
    runner.join(timeout=600)
    assert not runner.is_alive()
    assert len(result) == len(samples) * 2 * G
    assert all(t.failure is None for t in result)
    assert pool.metrics["pool/replaced"] >= 1
    assert pool.size == 2
    pool.wait_ready()
    assert {t.weight_version for t in pool.run(samples[:2])} == {7}  # replacement has v7


@pytest.mark.slow  # 1.5 min; CI keeps under 30 min, `bash scripts/test.sh -m slow` runs it
def test_autoscaling_grows_under_backlog_and_shrinks_when_idle(
    pool: RolloutPool, local_ray: None, tiny_model_dir: Path, samples: list[Sample]
) -> None:
    pool.shutdown()  # free the cores for this test's own pool
    config = PoolConfig(
        min_workers=1,
        max_workers=2,
        chunk_size=1,
        max_inflight_per_worker=1,
        scale_up_backlog=1,
        idle_timeout_s=0.0,
        request_cluster_resources=False,
    )
    elastic = make_rollout_pool(_config(tiny_model_dir, config))
    try:
        elastic.wait_ready()
        weights = load_file(tiny_model_dir / "model.safetensors")
        elastic.update_weights(3, weights.items())
        assert elastic.size == 1
        trajectories = elastic.run(samples)  # 6 one-sample chunks: a backlog
        assert elastic.size == 2
        assert len(trajectories) == len(samples) * G
        elastic.wait_ready()  # a worker still starting is never released as idle
        assert elastic.scale_down_idle() == 1
        assert elastic.size == 1
        elastic.run(samples)
        assert elastic.size == 2
        assert {t.weight_version for t in elastic.run(samples)} == {3}
    finally:
        elastic.shutdown()
