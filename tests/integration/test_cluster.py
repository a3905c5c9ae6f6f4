"""The train job as users run it on a cluster: `ray start --head`, `ray job submit`, and a
driver killed with SIGKILL after a checkpoint that `--resume` continues in the same MLflow run.

Slow (each starts two vLLM engines twice over); run with `bash scripts/test.sh -m slow`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
# Ray 2.60 clusters require a token (written to ~/.ray/auth_token by `ray start`); clients and
# drivers must be told to send it.
AUTH = {"RAY_AUTH_MODE": "token"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A Ray head started with the CLI: (GCS address, dashboard URL)."""
    temp = tmp_path_factory.mktemp("ray")
    port, dashboard = _free_port(), _free_port()
    previous = {k: os.environ.get(k) for k in AUTH}
    os.environ.update(AUTH)  # inherited by the CLI calls and drivers below
    subprocess.run(
        [
            str(BIN / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(port),
            "--dashboard-port", str(dashboard), "--temp-dir", str(temp), "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(_free_port()),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    subprocess.run([str(BIN / "ray"), "stop", "--force"], check=False, capture_output=True)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def warm_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("warm") / "model"
    command = [
        sys.executable, "-m", "jobs.sft", "--model", str(tiny_model_dir), "--out", str(out),
        "--steps", "80", "--samples", "64",
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    return out


def _ray(*args: str) -> str:
    done = subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def _job_status(dashboard: str, job: str) -> str:
    """SUCCEEDED, FAILED, STOPPED or RUNNING, from `ray job status` (the CLI sends the token)."""
    output = _ray("job", "status", "--address", dashboard, job)
    for word in ("succeeded", "failed", "stopped"):
        if f"Job '{job}' {word}" in output:
            return word.upper()
    return "RUNNING"


def _train_args(model: Path, run_dir: Path, steps: int) -> list[str]:
    return [
        "-m", "jobs.train", "--config", str(ROOT / "configs" / "demo.toml"),
        "--model", str(model), "--train.run_dir", str(run_dir),
        "--train.steps", str(steps), "--train.checkpoint_every", "1",
        "--train.val_every", "100", "--train.samples_every", "100",
        "--data.num_train", "16", "--data.num_val", "0",
        "--rollout.episode.max_new_tokens", "24",
    ]  # fmt: skip


def test_ray_job_submit(cluster: tuple[str, str], warm_model: Path, tmp_path: Path) -> None:
    _, dashboard = cluster
    entrypoint = [sys.executable, *_train_args(warm_model, tmp_path / "run", 1)]
    for _ in range(60):  # the head's job agent comes up a little after `ray start` returns
        submitted = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--no-wait",
             "--submission-id", "ergo-e2e", "--working-dir", str(ROOT), "--", *entrypoint],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if "No available agent" not in submitted.stderr:
            break
        time.sleep(2)
    assert submitted.returncode == 0, submitted.stderr[-4000:]
    deadline = time.monotonic() + 900
    while (status := _job_status(dashboard, "ergo-e2e")) not in {"SUCCEEDED", "FAILED", "STOPPED"}:
        assert time.monotonic() < deadline, "the job did not finish in 15 minutes"
        time.sleep(5)
    logs = _ray("job", "logs", "--address", dashboard, "ergo-e2e")
    assert status == "SUCCEEDED", logs[-4000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_resume_after_sigkill(cluster: tuple[str, str], warm_model: Path, tmp_path: Path) -> None:
    address, _ = cluster
    run_dir = tmp_path / "run"
    args = [sys.executable, *_train_args(warm_model, run_dir, 3), "--address", address]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 900
    while not (latest.exists() and json.loads(latest.read_text())["step"] >= 1):
        assert driver.poll() is None, "the driver ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(1)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < 3

    done = subprocess.run(
        [*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("ergo-rl-demo").experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "reward/total")]
    assert sorted(steps) == [1, 2, 3]  # the same run, every step once
