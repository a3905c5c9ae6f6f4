"""Serve a policy over HTTP with Ray Serve: OpenAI chat completions and ERGO's two-stage answer.

    python -m jobs.serve --model PATH_OR_NAME [--config configs/serve_demo.toml]
                         [--prompts FILE.toml] [--address auto] [--section.field value ...]

Routes (under `http.route_prefix`):
- `POST /v1/chat/completions`: OpenAI-compatible (text and `image_url` data URLs, multi-turn,
  temperature/top_p/max_tokens/stop/seed/n), so OpenAI clients and evaluation scripts work.
- `POST /v1/ergo`: image + question (+ options) -> answer, box, crop, vision tokens, timings;
  coarse view -> crop of the original -> answer, run on the server.
- `GET /v1/models` (the served name and its aliases, `serving.served_model_aliases`),
  `GET /health` (the replica is alive), `GET /ready` (its engine generated a
  token just now; 503 once the engine failed or passed its deadline, after which Serve's health
  check replaces the replica). Ray Serve's own `/-/healthz` and `/-/routes` are there too.

Each replica hosts one `serving.model.ServingModel` (one engine). Concurrent requests are
batched (`serve.batch`) into shared engine calls; replicas scale between `autoscaling.min_replicas`
and `max_replicas` on ongoing requests. Resources, batching and autoscaling come from config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from actors.engine import EngineConfig
from actors.guarded_engine import EngineDead
from actors.resources import WorkerResources
from core.prompts import PromptsPath
from jobs.config import load_toml, parse_job_args
from serving.model import PreparedChat, PreparedErgo, ServingConfig, ServingModel
from serving.protocol import RequestError

logger = logging.getLogger(__name__)


class AutoscalingSettings(BaseModel):
    """Ray Serve's request-based autoscaling of the replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0)
    """Replicas kept when idle."""
    max_replicas: int = Field(1, ge=1)
    """Most replicas (one engine each)."""
    initial_replicas: int | None = Field(None, ge=0)
    """Replicas at start (default: `min_replicas`)."""
    target_ongoing_requests: float = Field(2.0, gt=0.0)
    """Requests in flight per replica that the autoscaler aims for."""
    upscale_delay_s: float = Field(30.0, ge=0.0)
    """How long load must stay high before a replica is added."""
    downscale_delay_s: float = Field(600.0, ge=0.0)
    """How long load must stay low before a replica is removed."""
    look_back_period_s: float = Field(30.0, gt=0.0)
    """Window over which ongoing requests are averaged."""
    metrics_interval_s: float = Field(10.0, gt=0.0)
    """How often replicas report their load (Ray calls this field deprecated; its successors are
    the RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S environment variables)."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas is below min_replicas")
        return self

    def as_ray(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ReplicaSettings(WorkerResources):
    """One replica's resources (`num_cpus`, `num_gpus`, `custom`: one GPU per engine on
    clusters) and its request limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_ongoing_requests: int = Field(16, ge=1)
    """Requests one replica holds at once (the batch is formed from these)."""
    max_queued_requests: int = Field(-1, ge=-1)
    """Requests queued for replicas before Serve answers 503 (-1: no limit)."""
    health_check_period_s: float = Field(10.0, gt=0.0)
    """How often Serve asks a replica whether its engine is healthy."""
    health_check_timeout_s: float = Field(30.0, gt=0.0)
    """A health check that takes longer counts as failed."""


class BatchSettings(BaseModel):
    """Dynamic batching of concurrent requests into one engine call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(8, ge=1)
    """Most requests per engine call."""
    batch_wait_timeout_s: float = Field(0.01, ge=0.0)
    """How long the first request of a batch waits for others."""


class HTTPSettings(BaseModel):
    """Where the application listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Bind address (`0.0.0.0` to serve other machines)."""
    port: int = Field(8000, ge=1, le=65535)
    """HTTP port of Serve's proxy."""
    app_name: str = "ergo"
    """Serve application name."""
    route_prefix: str = "/"
    """Prefix of every route."""
    request_timeout_s: float | None = Field(None, gt=0.0)
    """End-to-end timeout of one HTTP request at the proxy (default: none)."""


class ServeConfig(BaseModel):
    """Everything the serve job needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    """The model to serve: an HF folder or hub name (fills `engine.model`)."""
    prompts: PromptsPath | None = None
    """Prompt templates TOML (e.g. a released checkpoint's own); fills `serving.prompts` unless
    that is set. None: `serving.prompts` (default: ours)."""
    engine: EngineConfig
    """The engine each replica hosts (`engine.enforce_eager = false` captures CUDA graphs at
    start: slower to start, faster to decode on GPUs)."""
    serving: ServingConfig = ServingConfig()
    """Limits, chat defaults, the two-stage episode."""
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    """Replica counts and scaling."""
    replica: ReplicaSettings = ReplicaSettings()
    """Resources and request limits per replica."""
    batching: BatchSettings = BatchSettings()
    """Dynamic batching."""
    http: HTTPSettings = HTTPSettings()
    """Listening address and routes."""

    @model_validator(mode="before")
    @classmethod
    def _fill_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data:
            engine = data.setdefault("engine", {})
            if isinstance(engine, dict):
                engine["model"] = data["model"]
        return data

    @model_validator(mode="before")
    @classmethod
    def _fill_prompts(cls, data: Any) -> Any:
        """The top-level `prompts` fills `serving.prompts`, unless that is set."""
        if not isinstance(data, dict) or data.get("prompts") is None:
            return data
        serving = data.get("serving", {})
        if isinstance(serving, dict) and "prompts" not in serving:
            data["serving"] = {**serving, "prompts": data["prompts"]}
        elif isinstance(serving, ServingConfig) and "prompts" not in serving.model_fields_set:
            fields = serving.model_dump(exclude_unset=True)
            data["serving"] = {**fields, "prompts": data["prompts"]}
        return data


def load_serve_config(
    path: str | Path | None, model: str | None = None, overrides: list[str] | None = None
) -> ServeConfig:
    """The TOML file (if any), then `--model`, then dotted overrides; validated."""
    return load_toml(ServeConfig, path, overrides, model)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, read at most `limit` bytes deep (413 beyond, 400 if not JSON)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413, f"request body is {declared} bytes; the limit is {limit}", "too_large"
        )
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes", "too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise RequestError(
            400, f"the request body is not valid JSON: {exc}", "invalid_json"
        ) from exc


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


api = FastAPI(title="ERGO-RL", description="OpenAI-compatible and two-stage ERGO serving")


@serve.ingress(api)
class ErgoServer:
    """One replica: a `ServingModel` (its engine guarded: one thread, a deadline per call),
    batches from config."""

    def __init__(self, config: ServeConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.limits = config.serving.limits
        self.model = ServingModel(config.serving, config.engine)
        for batched in (self._chat_batch, self._ergo_batch):
            batched.set_max_batch_size(config.batching.max_batch_size)  # type: ignore[attr-defined]
            batched.set_batch_wait_timeout_s(config.batching.batch_wait_timeout_s)  # type: ignore[attr-defined]

    async def check_health(self) -> None:
        """Serve's periodic health check: one token from the engine within its deadline, or the
        replica is replaced (`EngineDead` once the engine failed or hung)."""
        await asyncio.to_thread(self.model.health)

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready(self) -> JSONResponse:
        try:
            return JSONResponse(await asyncio.to_thread(self.model.health))
        except EngineDead as exc:
            body = {"status": "unhealthy", "model": self.model.model_name, "reason": str(exc)}
            return JSONResponse(body, status_code=503)

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return self.model.models()

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> JSONResponse:
        return await self._handle(request, self.model.prepare_chat, self._chat_batch)

    @api.post("/v1/ergo")
    async def ergo(self, request: Request) -> JSONResponse:
        return await self._handle(request, self.model.prepare_ergo, self._ergo_batch)

    async def _handle(
        self, request: Request, prepare: Callable[[Any], Any], run: Callable[[Any], Awaitable[Any]]
    ) -> JSONResponse:
        try:
            body = await read_json(request, self.limits.max_request_bytes)
            prepared = await asyncio.to_thread(prepare, body)  # decoding images: off the loop
            result = await run(prepared)
        except RequestError as exc:
            return _error(exc)
        except EngineDead as exc:  # this replica is being replaced; retrying elsewhere helps
            return _error(RequestError(503, str(exc), "engine_unavailable"))
        except Exception as exc:  # the engine failed; the request itself was valid
            logger.exception("request failed")
            return _error(RequestError(500, f"engine error: {type(exc).__name__}", "engine_error"))
        return _error(result) if isinstance(result, RequestError) else JSONResponse(result)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # sizes reset from config
    async def _chat_batch(self, items: list[PreparedChat]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.model.run_chat, items)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # sizes reset from config
    async def _ergo_batch(self, items: list[PreparedErgo]) -> list[dict[str, Any] | RequestError]:
        return await asyncio.to_thread(self.model.run_ergo, items)


def build_app(config: ServeConfig) -> Any:
    """The Serve application: `ErgoServer` with resources and autoscaling from config."""
    replica = config.replica
    deployment = serve.deployment(ErgoServer).options(
        name="ErgoServer",
        autoscaling_config=config.autoscaling.as_ray(),
        ray_actor_options=replica.ray_options(),
        max_ongoing_requests=replica.max_ongoing_requests,
        max_queued_requests=replica.max_queued_requests,
        health_check_period_s=replica.health_check_period_s,
        health_check_timeout_s=replica.health_check_timeout_s,
    )
    return deployment.bind(config)


def deploy(config: ServeConfig) -> str:
    """Start Serve's proxy and the application on the connected Ray; returns the base URL."""
    http = config.http
    options: dict[str, Any] = {"host": http.host, "port": http.port}
    if http.request_timeout_s is not None:
        options["request_timeout_s"] = http.request_timeout_s
    serve.start(http_options=options)
    serve.run(build_app(config), name=http.app_name, route_prefix=http.route_prefix)
    return f"http://{http.host}:{http.port}{http.route_prefix.rstrip('/')}"


def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub name (overrides the config's)")
    parser.add_argument("--config", help="TOML config, e.g. configs/serve_demo.toml")
    parser.add_argument("--address", default=None, help="Ray address (default: auto or local)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, args = parse_job_args(ServeConfig, parser, argv)
    logger.info("config: %s", config.model_dump_json())
    ray.init(address=args.address)
    url = deploy(config)
    print(f"serving {config.model} at {url}/v1 (chat completions) and {url}/v1/ergo; Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    # Run the importable module's `main`: Ray pickles the config and the deployment class by
    # reference to `jobs.serve`; as `__main__` they would be pickled by value, which pydantic
    # models do not survive.
    from jobs.serve import main as run

    run()
