"""The eval job on a real local Ray with one vLLM CPU engine, on V* and HR-Bench files built here.

One rollout worker serves every test of the module (both benchmarks, both modes, two caps):
its engine takes most of the module's time to start. The benchmarks hold a corrupt image each
(an unreadable row) and a large image whose prompt at the larger cap exceeds the engine's
sequence limit (an engine error, in both modes); both must be counted wrong and listed by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from benchmark_files import encoded_image, write_hrbench, write_vstar

from actors.actor_pool import ActorPool
from actors.engine import EngineConfig
from core.geometry import budget_tokens
from jobs.config import TrackingConfig
from jobs.eval import EvalConfig, log_to_mlflow, make_eval_pool, run_eval

pytestmark = pytest.mark.integration
MAX_MODEL_LEN = 1024  # holds both turns of every small image, even at the larger cap
CAPS = (64, 1024)
BIG = (2400, 1600)  # 1014 tokens at the larger cap: with any prompt text, over MAX_MODEL_LEN
OPTIONS = ("red", "blue", "green", "yellow")


def _vstar_rows() -> list[tuple[dict[str, Any], bytes]]:
    rows = []
    for i, size in enumerate([(400, 300), (300, 200), BIG, (100, 60), (500, 375)]):
        text = f"What is the colour of object {i}?\n(A) red\n(B) blue\nAnswer with the letter."
        category = "direct_attributes" if i % 2 == 0 else "relative_position"
        record = {"image": f"{category}/sa_{i}.jpg", "text": text, "label": "AB"[i % 2]}
        image = b"\xff\xd8 corrupt jpeg" if i == 3 else encoded_image(size, (40 * i, 120, 90))
        rows.append((record | {"question_id": i, "category": category}, image))
    return rows


def _hrbench_rows() -> list[tuple[dict[str, Any], bytes]]:
    rows = []
    for i, size in enumerate([(448, 336), BIG, (420, 280), (333, 500)]):
        record = {"index": 100 + i, "question": f"Which colour is sign {i}?", "answer": "ABCD"[i]}
        record |= {"category": "single" if i < 2 else "cross", "cycle_category": "x"}
        image = b"not base64 of an image" if i == 2 else encoded_image(size, (10, 40 * i, 200))
        rows.append((record | dict(zip("ABCD", OPTIONS, strict=True)), image))
    return rows


def _config(dataset: str, root: Path, model: Path, out: Path) -> EvalConfig:
    return EvalConfig(
        dataset=dataset,  # type: ignore[arg-type]
        data_root=str(root),
        model=str(model),
        modes=("two-stage", "single-stage"),
        max_vision_tokens=CAPS,
        max_new_tokens=16,
        out=str(out),
    )


@pytest.fixture(scope="module")
def pool(local_ray: None, tiny_model_dir: Path) -> Iterator[ActorPool]:
    config = EvalConfig(dataset="vstar", data_root=".", model=str(tiny_model_dir))
    engine = EngineConfig(model=str(tiny_model_dir), max_model_len=MAX_MODEL_LEN)
    pool = make_eval_pool(config, engine)
    pool.wait_ready()
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def reports(
    pool: ActorPool, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[EvalConfig, list[dict[str, Any]]]]:
    root = tmp_path_factory.mktemp("benchmarks")
    write_vstar(root, _vstar_rows())
    write_hrbench(root, _hrbench_rows(), "4k")
    out = tmp_path_factory.mktemp("eval")
    runs = {}
    for dataset in ("vstar", "hrbench"):
        config = _config(dataset, root, tiny_model_dir, out / dataset)
        runs[dataset] = (config, run_eval(pool, config))
    return runs


@pytest.mark.parametrize("dataset", ["vstar", "hrbench"])
def test_both_modes_write_report_parquet_and_plot(reports: dict, dataset: str) -> None:
    config, summaries = reports[dataset]
    out = Path(config.out)
    assert json.loads((out / "report.json").read_text())["runs"] == summaries
    assert [(s["mode"], s["max_vision_tokens"]) for s in summaries] == [
        ("two-stage", 64),
        ("two-stage", 1024),
        ("single-stage", 64),
        ("single-stage", 1024),
    ]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000
    for summary in summaries:
        rows = pq.read_table(out / summary["parquet"]).to_pylist()
        assert len(rows) == summary["samples"] == (5 if dataset == "vstar" else 4)
        assert sum(r["correct"] for r in rows) == summary["correct"]
        assert [r["id"] for r in rows if r["failure"]] == [f["id"] for f in summary["failures"]]


@pytest.mark.parametrize("dataset", ["vstar", "hrbench"])
def test_numbers_are_consistent(reports: dict, dataset: str) -> None:
    _, summaries = reports[dataset]
    for s in summaries:
        blocks = s["categories"].values()
        for key in ("samples", "correct", "failed"):
            assert sum(b[key] for b in blocks) == s[key]
        assert s["accuracy"] == pytest.approx(s["correct"] / s["samples"])  # failures included
        assert s["failed"] == len(s["failures"]) >= 1
        tokens = s["vision_tokens"]
        assert tokens["total"] == pytest.approx(tokens["coarse"] + tokens["crop"])
        assert 0 < tokens["coarse"] <= s["max_vision_tokens"]
        assert 0 <= s["latency_s"]["p50"] <= s["latency_s"]["p95"]
        if s["mode"] == "single-stage":
            assert tokens["crop"] == 0 and s["fallback_rate"] is None
        else:
            assert 0 < tokens["crop"] <= s["max_vision_tokens"]
            assert 0.0 <= s["fallback_rate"] <= 1.0


@pytest.mark.parametrize(
    ("dataset", "unreadable", "too_long"),
    [("vstar", "vstar_3", "vstar_2"), ("hrbench", "hrbench_4k_102", "hrbench_4k_101")],
)
def test_failures_are_counted_and_listed(
    reports: dict, dataset: str, unreadable: str, too_long: str
) -> None:
    _, summaries = reports[dataset]
    assert budget_tokens(*BIG, CAPS[1]) == 1014  # + the prompt: over the engine's limit
    for s in summaries:
        failed = {f["id"]: f["reason"] for f in s["failures"]}
        assert "cannot decode" in failed.pop(unreadable)
        if s["max_vision_tokens"] == CAPS[1]:
            assert "longer than the maximum model length" in failed.pop(too_long)
        assert failed == {}


def test_mlflow_run_holds_metrics_and_files(reports: dict, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    config, summaries = reports["vstar"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = config.model_copy(update={"tracking": TrackingConfig(tracking_uri=uri)})
    run_id = log_to_mlflow(config, summaries)

    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "eval/single-stage/accuracy")
    assert sorted(m.step for m in history) == list(CAPS)
    files = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/report.json", "eval/accuracy_vs_tokens.png"} <= files
    assert client.get_run(run_id).data.params["dataset"] == "vstar"
