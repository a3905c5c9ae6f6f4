"""The train job end to end, as a user runs it: a subprocess with real Ray, real vLLM CPU
rollout and verifier engines, a 2-rank FSDP2 learner group, and a real `mlflow server`."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from safetensors.numpy import load_file

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("mlflow server did not come up") from None
            time.sleep(1)
    yield uri
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def warm_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly warm-started tiny model: it writes the format, so rewards differ within a
    group and GRPO has something to learn (a random model's rewards are all equal)."""
    out = tmp_path_factory.mktemp("warm") / "model"
    command = [
        sys.executable, "-m", "jobs.sft", "--model", str(tiny_model_dir), "--out", str(out),
        "--steps", "80", "--samples", "64",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_two_steps_end_to_end(mlflow_server: str, warm_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "jobs.train", "--config", str(ROOT / "configs" / "demo.toml"),
        "--model", str(warm_model),
        "--train.steps", "2", "--train.val_every", "2", "--train.samples_every", "2",
        "--train.checkpoint_every", "2", "--train.run_dir", str(run_dir),
        "--data.num_train", "16", "--data.num_val", "2",
        "--rollout.episode.max_new_tokens", "24",
        "--tracking.tracking_uri", mlflow_server, "--tracking.experiment", "e2e",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "2"
    expected = [
        "reward/total", "reward/region", "reward/box", "reward/accuracy", "reward/format",
        "reward/iou", "reward/coverage", "reward/region_failed",
        "rollout/vision_tokens_coarse", "rollout/vision_tokens_crop",
        "rollout/vision_tokens_total", "rollout/vision_tokens_full_resolution",
        "rollout/fallback_rate", "rollout/box_area_ratio", "rollout/tokens_per_s",
        "learner/loss", "learner/kl", "learner/entropy", "learner/grad_norm",
        "learner/clip_fraction", "learner/logprob_mismatch_max",
        "time/rollout", "time/reward", "time/learn", "time/sync", "val/accuracy",
    ]  # fmt: skip
    for key in expected:
        history = client.get_metric_history(run.info.run_id, key)
        assert history, key
        assert all(math.isfinite(m.value) for m in history), key
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "reward/total")]
    assert steps == [1, 2]
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")]
    assert sorted(val_steps) == [0, 2]  # the warm start's baseline, then every val_every
    assert (
        client.get_metric_history(run.info.run_id, "learner/logprob_mismatch_max")[0].value < 1e-3
    )

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "final", "plots", "samples"} <= artifacts
    final = {a.path for a in client.list_artifacts(run.info.run_id, "final")}
    assert "final/model.safetensors" in final
    sample_files = client.list_artifacts(run.info.run_id, "samples/step-000002")
    assert any(a.path.endswith("samples.json") for a in sample_files)

    grad_norms = [m.value for m in client.get_metric_history(run.info.run_id, "learner/grad_norm")]
    assert max(grad_norms) > 0, "every group's rewards were equal: nothing to learn"
    before = load_file(warm_model / "model.safetensors")
    after = load_file(run_dir / "final" / "model.safetensors")
    assert set(before) == set(after)
    assert max(float(np.abs(after[n] - before[n]).max()) for n in before) > 0
