"""Elastic rollout on Ray's own autoscaler (`tests/fake_cluster.py`): worker nodes are launched
when the pool asks for capacity, removed when the train loop releases idle workers, and killed
mid-step without losing a sample.

Rollout workers need the resource `rollout`, reward actors and the verifier `scorer`; only the
worker node type has them, the head none. The engines are the transformers backend on the tiny
model, to keep node starts quick (vLLM's CPU engine is covered by the other integration tests).
In the default run (about 4 minutes; the asynchronous node kill is slow). The cluster is this
module's own: its head has its own port and temp folder, and only its processes are ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from fake_cluster import FakeAutoscalingCluster, wait_for
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from actors.resources import WorkerResources
from actors.rollout_pool import PoolConfig
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from jobs.rollout import RolloutConfig, make_rollout_pool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
NODE = {"CPU": 2, "rollout": 1, "scorer": 1}  # one rollout worker per node, scorers beside it
IDLE_MINUTES = 0.1  # the autoscaler removes a node idle for 6 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAutoscalingCluster]:
    cluster = FakeAutoscalingCluster(
        tmp_path_factory.mktemp("fake"),
        head_cpus=2,
        node_types={"worker": {"resources": NODE, "max_workers": 3}},
        idle_timeout_minutes=IDLE_MINUTES,
    )
    try:
        cluster.connect()
        yield cluster
    finally:
        cluster.disconnect()


def _rollout_config(model: Path) -> RolloutConfig:
    return RolloutConfig(
        engine=EngineConfig(model=str(model), backend="hf"),
        episode=EpisodeConfig(
            coarse_max_tokens=DEMO_COARSE_TOKENS,
            crop_max_tokens=DEMO_COARSE_TOKENS,
            group_size=2,
            max_new_tokens=8,
        ),
        pool=PoolConfig(
            min_workers=1,
            max_workers=2,
            chunk_size=1,
            scale_up_backlog=1,
            idle_timeout_s=1.0,
            start_timeout_s=300,
        ),
        resources=WorkerResources(num_cpus=0.5, custom={"rollout": 1}),
    )


def test_nodes_join_under_backlog_serve_the_current_weights_and_leave_when_idle(
    cluster: FakeAutoscalingCluster, tiny_model_dir: Path
) -> None:
    """Pool size and node count over time: (1, 1), then (2, 2) under a backlog, then (1, 1)
    once the idle worker is released and the autoscaler removes its node, and no node once the
    pool is shut down."""
    timeline: list[tuple[int, int]] = []
    assert cluster.worker_nodes() == []  # the head cannot host a rollout worker
    pool = make_rollout_pool(_rollout_config(tiny_model_dir))
    pool.wait_ready()  # the pending worker made the autoscaler launch a node
    timeline.append((pool.size, len(cluster.worker_nodes())))
    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    pool.update_weights(7, ((name, tensor + 0.0) for name, tensor in weights.items()))

    samples = list(generate(SyntheticConfig(), num=6, seed=5))
    trajectories = pool.run(samples)  # 6 chunks for one worker: the pool asks for another
    assert len(trajectories) == 12 and all(t.failure is None for t in trajectories)
    assert {t.weight_version for t in trajectories} == {7}
    pool.wait_ready()
    wait_for(lambda: len(cluster.worker_nodes()) == 2, 120, "a second node")
    timeline.append((pool.size, len(cluster.worker_nodes())))
    served = [ray.get(s.handle.weights_source.remote()) for s in pool.slots.values()]
    assert [version for version, _ in served] == [7, 7]  # the new one loaded 7 before work
    assert "object store" in {via for _, via in served}  # not the driver's node: no shm file

    time.sleep(pool.config.idle_timeout_s)
    assert pool.scale_down_idle() == 1
    wait_for(lambda: len(cluster.worker_nodes()) == 1, 120, "the idle node removed")
    timeline.append((pool.size, len(cluster.worker_nodes())))
    assert timeline == [(1, 1), (2, 2), (1, 1)]
    assert pool.metrics["pool/released"] == 1 and pool.metrics["pool/size"] == 1
    pool.shutdown()  # withdraws its request: nothing holds the last node any more
    wait_for(lambda: not cluster.worker_nodes(), 120, "every node removed after the shutdown")


def test_a_hung_worker_is_timed_out_replaced_and_its_work_done_elsewhere(
    cluster: FakeAutoscalingCluster, tiny_model_dir: Path
) -> None:
    """A worker process stopped with SIGSTOP (alive, answering nothing) holds its chunks past
    `request_timeout_s`: it is killed and replaced, and its chunks run on the other worker."""
    config = _rollout_config(tiny_model_dir)
    pool_config = config.pool.model_copy(
        update={"min_workers": 2, "max_workers": 2, "request_timeout_s": 20.0}
    )
    pool = make_rollout_pool(config.model_copy(update={"pool": pool_config}))
    pool.wait_ready()
    stuck = next(iter(pool.slots.values())).handle
    pid = ray.get(stuck.__ray_call__.remote(lambda _: os.getpid()))
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        trajectories = pool.run(list(generate(SyntheticConfig(), num=4, seed=6)))
        assert time.monotonic() - started < 120  # one deadline, then the retries
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert len(trajectories) == 8 and all(t.failure is None for t in trajectories)
    assert pool.metrics["pool/timed_out"] >= 1 and pool.metrics["pool/replaced"] >= 1
    assert pool.metrics["pool/retried"] >= 1 and stuck not in [
        s.handle for s in pool.slots.values()
    ]
    pool.shutdown()


def _train_command(
    model: Path, run_dir: Path, address: str, steps: int, staleness: int
) -> list[str]:
    return [
        sys.executable, "-m", "jobs.train", "--config", str(ROOT / "configs" / "demo.toml"),
        "--model", str(model), "--address", address, "--train.run_dir", str(run_dir),
        "--train.steps", str(steps), "--train.checkpoint_every", "1",
        "--train.val_every", "100", "--train.samples_every", "100",
        "--data.num_train", "32", "--data.num_val", "0", "--learner.world_size", "1",
        "--train.prompts_per_step", "8", "--rollout.engine.backend", "hf",
        "--rollout.resources.custom.rollout", "1", "--rollout.pool.max_workers", "2",
        "--rollout.pool.chunk_size", "1",
        "--rollout.pool.scale_up_backlog", "1", "--rollout.pool.request_cluster_resources",
        "true", "--rollout.pool.idle_timeout_s", "600",
        "--rewards.verifier.engine.backend", "hf", "--rewards.verifier.resources.custom.scorer",
        "0.25", "--rewards.resources.custom.scorer", "0.25", "--rewards.pool.chunk_size", "2",
        "--rewards.pool.request_cluster_resources", "true",
        "--train.max_staleness", str(staleness), "--learner.grpo.tis_cap", "2.0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "staleness", [0, pytest.param(1, marks=pytest.mark.slow)], ids=["sync", "async"]
)
def test_a_node_killed_mid_run_loses_no_sample(
    cluster: FakeAutoscalingCluster, tiny_model_dir: Path, tmp_path: Path, staleness: int
) -> None:
    """The node that hosts a rollout worker, both reward actors and the verifier is SIGKILLed
    as soon as step 2 is checkpointed: during step 3's rollout (synchronous), or step 4's,
    which runs beside step 3's learning (`train.max_staleness = 1`, slow tier). Every step
    still trains on all prompts x G trajectories, none failed, and the replacements and
    retries are in MLflow."""
    wait_for(lambda: not cluster.worker_nodes(), 120, "the earlier tests' nodes removed")
    steps, run_dir = 5, tmp_path / "run"
    command = _train_command(tiny_model_dir, run_dir, cluster.address, steps, staleness)
    log = (tmp_path / "train.log").open("w")
    driver = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    latest = run_dir / "checkpoints" / "latest.json"

    def at_step(step: int) -> bool:
        assert driver.poll() is None, (tmp_path / "train.log").read_text()[-4000:]
        return latest.exists() and json.loads(latest.read_text())["step"] >= step

    wait_for(lambda: at_step(2), 600, "step 2", every_s=0.1)  # step 3 starts with its rollout
    first = cluster.worker_nodes()[0]  # the first launched: the scorers and a rollout worker
    assert cluster.kill_node(first) > 0
    assert driver.wait(timeout=900) == 0, (tmp_path / "train.log").read_text()[-4000:]

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    [run] = client.search_runs(client.get_experiment_by_name("ergo-rl-demo").experiment_id)

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                        key=lambda m: m.step)]  # fmt: skip

    prompts, group = 8, 4  # group_size: demo.toml's
    assert history("rollout/trajectories") == [prompts * group] * steps
    assert history("train/trained_rows") == [prompts * group] * steps
    assert history("rollout/failed") == [0.0] * steps
    if staleness == 0:  # no request is ever in flight across a weight update
        assert history("rollout/off_version") == [0.0] * steps
    assert history("train/staleness_max")[0] == 0.0  # (later batches may pick up newer weights)
    assert all(lag <= staleness for lag in history("train/staleness_max"))
    assert history("train/too_stale") == [0.0] * steps
    assert history("reward/region_failed") == [0.0] * steps
    assert history("pool/replaced")[-1] >= 1 and history("reward_pool/replaced")[-1] >= 1
    assert history("pool/retried")[-1] >= 1  # the dead worker's chunks ran elsewhere
    assert min(history("cluster/nodes")) >= 2 and max(history("pool/size")) == 2
    assert torch.isfinite(torch.tensor(history("learner/loss"))).all()
