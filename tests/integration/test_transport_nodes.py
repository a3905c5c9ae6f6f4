"""The weight transport chosen per rollout worker, on a real two-node Ray cluster.

`ray.cluster_utils.Cluster` starts a second raylet on this machine: a separate Ray node with its
own object store. The learner group (2 FSDP ranks) runs on the head node, one rollout worker
beside it and one on the other node, pinned there by custom resources. With the default
transport (`auto`), the worker beside the learners maps their shared-memory file and the other
fetches every rank's rows from the object store; both then serve the same new weights. (Both
nodes share this machine's /dev/shm, so the choice is by Ray node, not by whether the file can
be seen.) The engines are the transformers backend, to keep the test quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from actors.engine import EngineConfig, TokenPrompt
from actors.resources import WorkerResources
from actors.rollout_worker import RolloutWorker
from core.sharded_weights import ShardedWeights
from core.trajectory import Trajectory
from jobs.learner import make_learner_group
from learners.batch import TrainRow
from learners.config import LearnerConfig, OptimConfig

# slow: CI's fast suite stays under 30 minutes; run with `bash scripts/test.sh -m slow`
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"learner_node": 3}},
    )
    cluster.add_node(num_cpus=1, resources={"far_node": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _worker(model: Path, resource: str) -> Any:
    actor = ray.remote(RolloutWorker).options(num_cpus=0.25, resources={resource: 1})
    return actor.remote(EngineConfig(model=str(model), backend="hf"))


def _node(actor: Any) -> str:
    return str(
        ray.get(actor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
    )


def test_each_worker_takes_the_fastest_path_to_the_new_weights(
    two_nodes: Cluster,
    tiny_model_dir: Path,
    train_rows: list[TrainRow],
    episode_trajectories: list[Trajectory],
) -> None:
    rank = WorkerResources(num_cpus=0.25, custom={"learner_node": 1})
    config = LearnerConfig(model=str(tiny_model_dir), optim=OptimConfig(lr=1e-3))
    group = make_learner_group(config, 2, rank)  # the default transport: auto
    near, far = _worker(tiny_model_dir, "learner_node"), _worker(tiny_model_dir, "far_node")
    head = ray.get(group.workers[0].node_id.remote())
    assert [_node(near), _node(far)] == [head, _node(far)] and _node(far) != head
    assert ray.get([w.weights_source.remote() for w in (near, far)]) == [(0, ""), (0, "")]
    t = episode_trajectories[0]
    prompt = TokenPrompt(t.token_ids, t.images)
    before = ray.get(near.score.remote([prompt]))[0].logprobs

    group.step(train_rows)
    exported = group.export_weights(1)
    assert isinstance(exported, ShardedWeights) and exported.shared is not None
    assert exported.shared.node_id == head  # every rank on the head: the file is there
    ray.get([w.update_weights.remote(1, exported) for w in (near, far)])

    assert ray.get(near.weights_source.remote()) == (1, "shared memory")
    assert ray.get(far.weights_source.remote()) == (1, "object store")
    served = [ray.get(w.score.remote([prompt]))[0].logprobs for w in (near, far)]
    assert served[0] == pytest.approx(served[1], abs=1e-6)  # the same weights either way
    assert max(abs(a - b) for a, b in zip(served[0], before, strict=True)) > 1e-3  # new ones
    group.shutdown()
