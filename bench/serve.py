"""Benchmark: the serve job under N concurrent HTTP clients on loopback, with and without ERGO.

    python bench/serve.py [--clients 4] [--seconds 20] [--backend vllm] [--replicas 1]
                          [--budget 64] [--chat-image-tokens 128] [--max-tokens 48] [--model DIR]

Deploys `jobs.serve`'s application on a local Ray (the tiny model unless `--model`), then, for
each path in turn, N client threads send requests back to back for a bounded time: `chat` is a
one-stage OpenAI chat completion with the image (resized under `--chat-image-tokens`), `ergo`
is the two-stage endpoint (coarse view and crop each under `--budget`). Requests started before
the deadline are waited for and counted. One warm-up request per path is excluded.
Prints requests/s, p50/p95 latency, errors and vision tokens per request for both paths.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import ray
from ray import serve

from actors.engine import EngineConfig
from actors.episode import EpisodeConfig
from core.geometry import budget_tokens
from core.synthetic import SyntheticConfig, generate
from jobs.make_tiny_model import make_tiny_model
from jobs.serve import AutoscalingSettings, BatchSettings, ReplicaSettings, ServeConfig, build_app
from serving.model import ServingConfig


@dataclass
class PathResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    vision_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payloads(path: str, args: argparse.Namespace) -> list[bytes]:
    """Pre-encoded request bodies (one per synthetic image), so clients only send bytes."""
    bodies = []
    for sample in generate(SyntheticConfig(), num=8, seed=0):
        url = "data:image/png;base64," + base64.b64encode(sample.image).decode()
        if path == "chat":
            body = {
                "model": "tiny",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": url}},
                            {"type": "text", "text": sample.question},
                        ],
                    }
                ],
                "max_tokens": args.max_tokens,
                "temperature": 0.0,
            }
        else:
            body = {"image": url, "question": sample.question, "options": list(sample.options)}
        bodies.append(json.dumps(body).encode())
    return bodies


def _vision_tokens(response: dict, chat_image_tokens: int) -> int:
    if "vision_tokens" in response:  # the two-stage answer counts its own
        return int(response["vision_tokens"]["total"])
    return budget_tokens(2048, 1536, chat_image_tokens)  # the synthetic images' size


@dataclass(frozen=True)
class Load:
    path: str
    clients: int
    seconds: float
    chat_image_tokens: int


def drive(base: str, load: Load, bodies: list[bytes]) -> PathResult:
    path, clients = load.path, load.clients
    route = "/v1/chat/completions" if path == "chat" else "/v1/ergo"
    result = PathResult()
    lock = threading.Lock()
    deadline = time.perf_counter() + load.seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            i = index
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = http.post(
                    route,
                    content=bodies[i % len(bodies)],
                    headers={"content-type": "application/json"},
                )
                took = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        result.latencies_s.append(took)
                        tokens = _vision_tokens(response.json(), load.chat_image_tokens)
                        result.vision_tokens.append(tokens)
                    else:
                        result.errors.append(f"{response.status_code}: {response.text[:120]}")
                i += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    return result


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="per path")
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--budget", type=int, default=64, help="ERGO coarse and crop tokens")
    parser.add_argument("--chat-image-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=48, help="new tokens per turn")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--model", help="model folder (default: the tiny model, built here)")
    parser.add_argument("--paths", default="chat,ergo")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(make_tiny_model(Path(folder) / "tiny", seed=0))
        config = ServeConfig(
            model=model,
            engine=EngineConfig(backend=args.backend, model=model, max_model_len=4096),
            serving=ServingConfig(
                served_model_name="tiny",
                chat_image_max_tokens=args.chat_image_tokens,
                episode=EpisodeConfig(
                    coarse_max_tokens=args.budget,
                    crop_max_tokens=args.budget,
                    group_size=1,
                    max_new_tokens=args.max_tokens,
                    temperature=0.0,
                ),
            ),
            autoscaling=AutoscalingSettings(min_replicas=args.replicas, max_replicas=args.replicas),
            replica=ReplicaSettings(num_cpus=0.25, max_ongoing_requests=4 * args.clients),
            batching=BatchSettings(max_batch_size=args.max_batch_size),
        )
        port = _free_port()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.perf_counter()
        serve.run(build_app(config), name="bench", route_prefix="/")
        print(f"deployed in {time.perf_counter() - started:.0f} s")
        base = f"http://127.0.0.1:{port}"
        results = {}
        for path in args.paths.split(","):
            bodies = _payloads(path, args)
            drive(base, Load(path, 1, 0.001, args.chat_image_tokens), bodies[:1])  # warm-up
            load = Load(path, args.clients, args.seconds, args.chat_image_tokens)
            results[path] = drive(base, load, bodies)
        serve.shutdown()
        ray.shutdown()

    print(
        f"{args.backend} backend, {args.replicas} replica(s), {args.clients} clients x"
        f" {args.seconds:g} s per path, <= {args.max_tokens} new tokens per turn, batches of"
        f" <= {args.max_batch_size}, 2048x1536 PNG images sent as data URLs"
    )
    print(
        f"{'path':<40} {'done':>5} {'err':>4} {'req/s':>6} {'p50 s':>6} {'p95 s':>6} {'tokens':>7}"
    )
    labels = {
        "chat": f"chat, 1 stage (image <= {args.chat_image_tokens} tok)",
        "ergo": f"ergo, 2 stages (coarse + crop <= {args.budget} each)",
    }
    for path, r in results.items():
        tokens = statistics.mean(r.vision_tokens) if r.vision_tokens else float("nan")
        print(
            f"{labels[path]:<40} {len(r.latencies_s):>5} {len(r.errors):>4}"
            f" {len(r.latencies_s) / r.seconds:>6.2f} {_percentile(r.latencies_s, 50):>6.2f}"
            f" {_percentile(r.latencies_s, 95):>6.2f} {tokens:>7.0f}"
        )
        for error in r.errors[:3]:
            print(f"  error: {error}")
    print("tokens: vision tokens per request (ergo: coarse view + crop)")


if __name__ == "__main__":
    main()
