"""The serve job on a real local Ray: Ray Serve, a vLLM CPU engine per replica, real HTTP.

One application with one vLLM replica serves the first tests in order (text before any image on
a fresh replica, the real `openai` client, the two-stage endpoint, bad inputs, then a real engine
failure and the replica's replacement); it is then deleted, and the autoscaling test deploys its own
application on the transformers engine (lighter: two replicas start in seconds on 2 cores),
drives a burst at it and watches `serve.status()`. Autoscaling metrics are pushed every 0.5 s
here (Ray's default is 10 s) so that scaling happens within the test's time.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import ray
from PIL import Image
from ray import serve

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from core.sample import encode_png
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from jobs.serve import (
    AutoscalingSettings,
    BatchSettings,
    HTTPSettings,
    ReplicaSettings,
    ServeConfig,
    build_app,
)
from serving.image_input import RequestLimits
from serving.model import ServingConfig

pytestmark = pytest.mark.integration
APP = "ergo"
PUSH_INTERVALS = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A local Ray (2 CPUs) with Serve's proxy on a free port (other Serve clusters may run)."""
    saved = {k: os.environ.get(k) for k in PUSH_INTERVALS}
    os.environ.update(PUSH_INTERVALS)  # inherited by Ray's processes
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _config(model: Path, engine: dict[str, Any], **sections: Any) -> ServeConfig:
    return ServeConfig(
        model=str(model),
        engine=EngineConfig(model=str(model), max_model_len=2048, **engine),
        serving=ServingConfig(
            served_model_name="tiny",
            chat_image_max_tokens=DEMO_COARSE_TOKENS,
            episode=EpisodeConfig(
                coarse_max_tokens=DEMO_COARSE_TOKENS,
                crop_max_tokens=DEMO_COARSE_TOKENS,
                group_size=1,
                max_new_tokens=24,
                temperature=0.0,
            ),
            limits=RequestLimits(max_request_bytes=8 << 20, max_image_pixels=4_000_000),
        ),
        **{"replica": ReplicaSettings(num_cpus=0.25, max_ongoing_requests=8), **sections},
    )


# Chunked prefill is turned back on (the CPU default is off) so that one request can fail the
# engine for real: a seeded prompt longer than a step is vLLM's CPU fault (see test_vllm_engine).
FAULTY_ENGINE = {"chunked_prefill": True, "max_num_batched_tokens": 512}


@pytest.fixture(scope="module")
def vllm_app(base_url: str, tiny_model_dir: Path) -> Iterator[str]:
    config = _config(
        tiny_model_dir,
        FAULTY_ENGINE,
        replica=ReplicaSettings(
            num_cpus=0.25,
            max_ongoing_requests=8,
            health_check_period_s=2,
            health_check_timeout_s=30,
        ),
    )
    serve.run(build_app(config), name=APP, route_prefix="/")
    yield base_url
    if APP in serve.status().applications:
        serve.delete(APP)


@pytest.fixture(scope="module")
def sample() -> Any:
    return next(iter(generate(SyntheticConfig(), num=1, seed=21)))


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_text_first_then_images_then_text_on_a_fresh_replica(vllm_app: str, sample: Any) -> None:
    """Regression: a text-only first request used to fail vLLM's CPU attention check
    (`thread_num == thread_num (1 vs. 2)`) on the replica's engine thread and kill the engine."""
    image = _chat(_image_part(data_url(sample.image)))
    with httpx.Client(base_url=vllm_app, timeout=120) as http:
        for body in (_chat("hi"), image, image, _chat("hi again")):
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
        assert http.get("/ready").status_code == 200


def test_openai_client_gets_a_chat_completion_with_an_image(vllm_app: str, sample: Any) -> None:
    client = openai.OpenAI(base_url=f"{vllm_app}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    completion = client.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(sample.image)}},
                    {"type": "text", "text": sample.question},
                ],
            },
        ],
        max_tokens=12,
        temperature=0.0,
        seed=3,
    )
    choice = completion.choices[0]
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.usage.prompt_tokens > DEMO_COARSE_TOKENS // 2  # the image's tokens count
    # multi-turn, sampled, n = 2, with a stop string
    again = client.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": choice.message.content or "hi"},
            {"role": "user", "content": "And now?"},
        ],
        max_tokens=8,
        temperature=0.9,
        n=2,
        stop=["\n\n"],
    )
    assert len(again.choices) == 2
    assert all("\n\n" not in (c.message.content or "") for c in again.choices)


def test_two_stage_answer_over_http_has_a_crop_inside_the_image(vllm_app: str, sample: Any) -> None:
    body = {"image": data_url(sample.image), "question": sample.question}
    response = httpx.post(
        f"{vllm_app}/v1/ergo", json={**body, "options": list(sample.options)}, timeout=120
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    width, height = answer["image_size"]
    assert (width, height) == (sample.decode_image().width, sample.decode_image().height)
    x1, y1, x2, y2 = answer["crop"]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    if answer["box"] is not None:  # the random tiny model rarely names one; then it falls back
        bx1, by1, bx2, by2 = answer["box"]
        assert x1 <= bx1 < bx2 <= x2 and y1 <= by1 < by2 <= y2
    else:
        assert answer["fallback"] in ("missing", "malformed", "inverted", "degenerate", "outside")
    tokens = answer["vision_tokens"]
    assert 0 < tokens["coarse"] <= DEMO_COARSE_TOKENS and 0 < tokens["crop"] <= DEMO_COARSE_TOKENS
    assert tokens["full_resolution"] > tokens["total"]
    assert answer["answer"] is None or answer["answer"] in "ABCD"
    assert answer["timings"]["total_s"] >= answer["timings"]["stage1_s"] > 0
    assert set(answer["stages"]) == {"coarse", "answer"}


def _chat(content: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 4}


def _image_part(url: str) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what?"}]


def test_bad_inputs_get_4xx_and_the_server_keeps_serving(vllm_app: str, sample: Any) -> None:
    big = encode_png(Image.new("L", (2500, 2000)))  # 5 MP: over the 4 MP limit, 20 kB encoded
    remote = "remote image URLs are not allowed"
    no_url = {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    cases: list[tuple[str, Any, int, str]] = [
        ("chat", _chat(_image_part(data_url(big))), 413, "2500x2000"),
        ("chat", _chat(_image_part(data_url(b"GIF89a? plain text"))), 400, "not a readable image"),
        ("chat", _chat(_image_part("https://example.com/cat.png")), 400, remote),
        ("chat", no_url, 400, "image_url"),
        ("chat", {"model": "tiny", "messages": [{"content": "no role"}]}, 400, "role"),
        ("chat", _chat("x" * (9 << 20)), 413, "limit"),
        ("ergo", {"image": data_url(big), "question": "q"}, 413, "pixels"),
        ("ergo", {"image": "https://example.com/cat.png", "question": "q"}, 400, remote),
    ]
    with httpx.Client(base_url=vllm_app, timeout=60) as http:
        for route, body, status, words in cases:
            path = "/v1/chat/completions" if route == "chat" else "/v1/ergo"
            response = http.post(path, json=body)
            assert response.status_code == status, (words, response.text[:300])
            assert words in response.json()["error"]["message"]
        bad_json = http.post("/v1/ergo", content=b"{not json", headers={"content-type": "x"})
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
        assert http.get("/health").json() == {"status": "ok"}
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["model"] == "tiny"
        fine = http.post("/v1/chat/completions", json=_chat(_image_part(data_url(sample.image))))
        assert fine.status_code == 200 and fine.json()["choices"]
    client = openai.OpenAI(base_url=f"{vllm_app}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="remote image URLs are not allowed"):
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": _image_part("http://169.254.169.254/x.png")}],
        )
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_a_failed_engine_fails_ready_and_serve_replaces_the_replica(vllm_app: str) -> None:
    long_seeded = {**_chat("many words " * 90), "seed": 5, "max_tokens": 2, "temperature": 1.0}
    with httpx.Client(base_url=vllm_app, timeout=120) as http:
        failed = http.post("/v1/chat/completions", json=long_seeded)
        assert failed.status_code == 503, failed.text
        assert "CPU Generator does not use offset" in failed.json()["error"]["message"]
        after = http.post("/v1/chat/completions", json=_chat("hi"))  # fails fast, never hangs
        assert after.status_code in (503, 200)  # 200 once a new replica answers
        deadline = time.monotonic() + 300
        while http.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert http.get("/ready").json()["status"] == "ready"
        assert http.post("/v1/chat/completions", json=_chat("hi")).status_code == 200


def _replicas(app: str) -> dict[str, int]:
    deployment = serve.status().applications[app].deployments["ErgoServer"]
    return {getattr(s, "value", str(s)): n for s, n in deployment.replica_states.items()}


def _running(app: str) -> int:
    return _replicas(app).get("RUNNING", 0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.slow  # 1.5 min; CI keeps under 30 min, `bash scripts/test.sh -m slow` runs it
def test_autoscaling_rises_under_a_burst_and_falls_back_when_idle(
    vllm_app: str, tiny_model_dir: Path
) -> None:
    serve.delete(APP)  # keep to two engines on this machine
    config = _config(
        tiny_model_dir,
        {"backend": "hf", "cpu_threads": 1},  # one core computes, one starts the next replica
        autoscaling=AutoscalingSettings(
            min_replicas=1,
            max_replicas=2,
            target_ongoing_requests=1,
            upscale_delay_s=0.5,
            downscale_delay_s=2.0,
            look_back_period_s=1.0,
            metrics_interval_s=0.5,
        ),
        batching=BatchSettings(max_batch_size=1),
        http=HTTPSettings(app_name="scaling", route_prefix="/scaling"),
    )
    serve.run(build_app(config), name="scaling", route_prefix="/scaling")
    assert _running("scaling") == 1
    stop = threading.Event()
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=f"{vllm_app}/scaling", timeout=120) as http:
            while not stop.is_set():
                body = {**_chat("count to twenty"), "max_tokens": 8, "temperature": 1.0}
                statuses.append(http.post("/v1/chat/completions", json=body).status_code)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while _running("scaling") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        peak = _running("scaling")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert peak == 2, _replicas("scaling")
    assert statuses and set(statuses) == {200}
    deadline = time.monotonic() + 90  # idle: back to min_replicas, the extra one stopped
    while _replicas("scaling") != {"RUNNING": 1} and time.monotonic() < deadline:
        time.sleep(1)
    assert _replicas("scaling") == {"RUNNING": 1}
    serve.delete("scaling")
