"""The serving model without Ray: request parsing, limits, 4xx errors, the two-stage answer.

A scripted engine (the tiny model's real tokenizer and chat template, canned replies) records
what reaches it, so the tests check what the engine is given (images resized under the cap,
one placeholder per image) and that refused requests never reach it.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion
from PIL import Image
from transformers import AutoTokenizer

from actors.engine import Completion, EngineConfig, Sampling, TokenPrompt
from actors.episode import EpisodeConfig
from actors.guarded_engine import EngineDead
from core.geometry import vision_tokens
from core.sample import encode_png
from core.synthetic import DEMO_COARSE_TOKENS, SyntheticConfig, generate
from serving.image_input import RequestLimits
from serving.model import ServingConfig, ServingModel
from serving.protocol import RequestError

STAGE1 = "<think>the diamond is top left</think><zoom>[10, 20, 60, 50]</zoom>"
STAGE2 = "<think>I see it</think><answer>B</answer>"


@dataclass
class ScriptedEngine:
    """Stage-1 prompts (one image) get `first`; prompts with two images get `second`;
    text-only and chat prompts get `chat`."""

    tokenizer: Any
    first: str = STAGE1
    second: str = STAGE2
    chat: str = "Hello there. General Kenobi."
    fail: bool = False
    weight_version: int = 0
    calls: list[tuple[list[TokenPrompt], Sampling]] = field(default_factory=list)

    def generate(
        self, prompts: list[TokenPrompt], sampling: Sampling, seeds: Any = None
    ) -> list[list[Completion]]:
        if self.fail:
            raise RuntimeError("engine died")
        self.calls.append((prompts, sampling))
        return [[self._reply(p, sampling) for _ in range(sampling.n)] for p in prompts]

    def _reply(self, prompt: TokenPrompt, sampling: Sampling) -> Completion:
        ergo = "overview of a large image" in self.tokenizer.decode(prompt.token_ids)
        text = {2: self.second, 1: self.first if ergo else self.chat}.get(len(prompt.images))
        ids = self.tokenizer.encode(text or self.chat, add_special_tokens=False)
        cut = ids[: sampling.max_tokens]
        return Completion(cut, [-0.5] * len(cut), "length" if len(cut) < len(ids) else "stop")

    def shutdown(self) -> None:
        pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def make_model(
    model_dir: Path, engine: ScriptedEngine, limits: RequestLimits | None = None, **kw: Any
) -> ServingModel:
    config = ServingConfig(
        served_model_name="tiny",
        limits=limits or RequestLimits(max_image_pixels=4_000_000),
        chat_image_max_tokens=DEMO_COARSE_TOKENS,
        episode=EpisodeConfig(
            coarse_max_tokens=DEMO_COARSE_TOKENS,
            crop_max_tokens=DEMO_COARSE_TOKENS,
            group_size=1,
            max_new_tokens=48,
            temperature=0.0,
        ),
    )
    engine_config = EngineConfig(backend="hf", model=str(model_dir), max_model_len=1024)
    return ServingModel(config, engine_config, engine=engine, **kw)


@pytest.fixture
def engine(tokenizer: Any) -> ScriptedEngine:
    return ScriptedEngine(tokenizer)


@pytest.fixture
def server(tiny_model_dir: Path, engine: ScriptedEngine) -> ServingModel:
    return make_model(tiny_model_dir, engine)


@pytest.fixture(scope="module")
def sample() -> Any:
    return next(iter(generate(SyntheticConfig(), num=1, seed=4)))


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares a huge canvas in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)  # the first bytes of a black canvas
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def chat_body(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra}


def image_message(url: str, text: str = "What is in the image?") -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]


def test_chat_with_an_image_reaches_the_engine_resized(
    server: ServingModel, engine: ScriptedEngine, sample: Any
) -> None:
    body = chat_body(image_message(data_url(sample.image)), temperature=0.3, max_tokens=5, seed=7)
    [response] = server.run_chat([server.prepare_chat(body)])
    completion = ChatCompletion.model_validate(response)  # the openai client's own type
    [(prompts, sampling)] = engine.calls
    image = prompts[0].images[0]
    assert vision_tokens(*image.size) <= DEMO_COARSE_TOKENS
    assert prompts[0].token_ids.count(server.chat.image_token_id) == 1
    assert (sampling.temperature, sampling.max_tokens, sampling.seed) == (0.3, 5, 7)
    assert sampling.banned_token_ids == server.chat.vision_token_ids
    cut = server.chat.decode(server.chat.encode(engine.chat)[:5])  # max_tokens = 5
    assert completion.choices[0].message.content == cut != engine.chat
    assert completion.choices[0].finish_reason == "length"
    expected_prompt = len(prompts[0].token_ids) - 1 + vision_tokens(*image.size)
    assert completion.usage is not None and completion.usage.prompt_tokens == expected_prompt


def test_multi_turn_text_and_bare_image_url(
    server: ServingModel, engine: ScriptedEngine, sample: Any
) -> None:
    url = data_url(sample.image)  # a bare string, as some clients send it
    body = {
        "model": "tiny",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image_url", "image_url": url}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A picture."}]},
            {"role": "user", "content": "And the colours?"},
        ],
        "n": 2,
        "user": "ignored",
    }
    [response] = server.run_chat([server.prepare_chat(body)])
    text = server.chat.decode(engine.calls[0][0][0].token_ids)
    assert text.index("Be brief.") < text.index("A picture.") < text.index("And the colours?")
    assert len(response["choices"]) == 2 and engine.calls[0][1].n == 2


def test_stop_sequences_cut_the_text_and_the_token_count(server: ServingModel) -> None:
    [response] = server.run_chat([server.prepare_chat(chat_body("hi", stop=[" General", "xyz"]))])
    choice = response["choices"][0]
    assert choice["message"]["content"] == "Hello there."
    assert choice["finish_reason"] == "stop"
    full = len(server.chat.encode("Hello there. General Kenobi."))
    assert 0 < response["usage"]["completion_tokens"] < full


def test_a_batch_makes_one_engine_call_per_sampling_setting(
    server: ServingModel, engine: ScriptedEngine
) -> None:
    items = [
        server.prepare_chat(chat_body("one", temperature=0.5)),
        server.prepare_chat(chat_body("two", temperature=0.0)),
        server.prepare_chat(chat_body("three", temperature=0.5)),
    ]
    responses = server.run_chat(items)
    assert [len(prompts) for prompts, _ in engine.calls] == [2, 1]
    assert len(responses) == 3 and all(r["choices"] for r in responses)


def test_two_stage_answer_with_a_box_inside_the_image(server: ServingModel, sample: Any) -> None:
    body = {"image": data_url(sample.image), "question": sample.question}
    [answer] = server.run_ergo([server.prepare_ergo({**body, "options": list(sample.options)})])
    assert isinstance(answer, dict)
    width, height = answer["image_size"]
    assert (width, height) == Image.open(io.BytesIO(sample.image)).size
    x1, y1, x2, y2 = answer["box"]
    sx, sy = width / answer["coarse_size"][0], height / answer["coarse_size"][1]
    assert (x1, y1, x2, y2) == pytest.approx((10 * sx, 20 * sy, 60 * sx, 50 * sy), abs=0.1)
    cx1, cy1, cx2, cy2 = answer["crop"]
    assert 0 <= cx1 <= x1 < x2 <= cx2 <= width and 0 <= cy1 <= y1 < y2 <= cy2 <= height
    assert answer["answer"] == "B" and answer["fallback"] is None
    tokens = answer["vision_tokens"]
    assert tokens["total"] == tokens["coarse"] + tokens["crop"] <= 2 * DEMO_COARSE_TOKENS
    assert tokens["full_resolution"] > tokens["total"]
    assert answer["timings"]["total_s"] >= answer["timings"]["stage1_s"] >= 0


def test_two_stage_fallback_and_free_form(
    tiny_model_dir: Path, tokenizer: Any, sample: Any
) -> None:
    engine = ScriptedEngine(tokenizer, first="no box here", second="<answer>a red car</answer>")
    server = make_model(tiny_model_dir, engine)
    [answer] = server.run_ergo(
        [server.prepare_ergo({"image": data_url(sample.image), "question": "What is it?"})]
    )
    assert isinstance(answer, dict)
    assert answer["fallback"] == "missing" and answer["box"] is None
    assert answer["crop"] == [0, 0, *answer["image_size"]]
    assert answer["answer"] == "a red car"


def _truncated_png(sample: Any) -> bytes:
    return sample.image[: len(sample.image) // 2]


def _big_png() -> bytes:
    return encode_png(Image.new("L", (3000, 2000)))  # 6 MP, over the 4 MP test limit


def _img(url: str) -> dict[str, Any]:
    return chat_body(image_message(url))


def _msgs(*messages: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": list(messages)}


REMOTE = "remote image URLs are not allowed"
# (route, request body given a sample, status, words the message must hold)
BAD_REQUESTS: list[tuple[str, Callable[[Any], Any], int, str]] = [
    ("chat", lambda s: _img(data_url(_big_png())), 413, "3000x2000"),
    ("chat", lambda s: _img(data_url(png_header(9000, 9000))), 413, "limit"),
    ("chat", lambda s: _img(data_url(b"%PDF-1.4 not an image")), 400, "not a readable image"),
    ("chat", lambda s: _img(data_url(_truncated_png(s))), 400, "cannot decode"),
    ("chat", lambda s: _img("https://example.com/a.png"), 400, REMOTE),
    ("chat", lambda s: _img("file:///etc/passwd"), 400, "unsupported image URL"),
    ("chat", lambda s: _img(data_url(s.image, "text/plain")), 400, "not image/*"),
    ("chat", lambda s: _img("data:image/png;base64,@@@@"), 400, "not valid base64"),
    ("chat", lambda s: _img("data:image/png,rawbytes"), 400, "base64-encoded"),
    ("chat", lambda s: _msgs({"role": "robot", "content": "hi"}), 400, "messages.0.role"),
    ("chat", lambda s: _msgs({"role": "user"}), 400, "messages.0.content"),
    ("chat", lambda s: {"model": "tiny", "messages": "hello"}, 400, "messages"),
    ("chat", lambda s: _msgs(), 400, "messages"),
    ("chat", lambda s: chat_body([{"type": "image_url", "image_url": {}}]), 400, "url"),
    ("chat", lambda s: chat_body([{"type": "input_audio"}]), 400, "input_audio"),
    ("chat", lambda s: chat_body("hi", stream=True), 400, "streaming is not supported"),
    ("chat", lambda s: chat_body("hi", tools=[{"type": "function"}]), 400, "tools"),
    ("chat", lambda s: chat_body("hi", temperature=3), 400, "temperature"),
    ("chat", lambda s: chat_body("hi", n=2, temperature=0), 400, "n > 1"),
    ("chat", lambda s: chat_body("hi", max_tokens=5000), 400, "context is 1024 tokens"),
    ("chat", lambda s: chat_body("look <|image_pad|> here"), 400, "special token <|image_pad|>"),
    ("chat", lambda s: chat_body(image_message(data_url(s.image)) * 3), 400, "at most 2"),
    ("chat", lambda s: {**chat_body("hi"), "model": "gpt-4o"}, 404, "not served here"),
    ("chat", lambda s: [1, 2], 400, "JSON object"),
    (
        "chat",
        lambda s: _msgs({"role": "assistant", "content": image_message(data_url(s.image))}),
        400,
        "only appear in user",
    ),
    ("ergo", lambda s: {"image": data_url(s.image), "question": "   "}, 400, "blank"),
    ("ergo", lambda s: {"image": data_url(s.image)}, 400, "question"),
    ("ergo", lambda s: {"image": "http://10.0.0.1/x.png", "question": "q"}, 400, REMOTE),
    (
        "ergo",
        lambda s: {"image": data_url(png_header(40000, 40000)), "question": "q"},
        413,
        "pixels",
    ),
    (
        "ergo",
        lambda s: {"image": data_url(s.image), "question": "q", "options": [""]},
        400,
        "options",
    ),
    ("ergo", lambda s: {"image": data_url(s.image), "question": "q", "extra": 1}, 400, "extra"),
]


@pytest.mark.parametrize(("route", "make", "status", "words"), BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx_and_never_reach_the_engine(
    server: ServingModel,
    engine: ScriptedEngine,
    sample: Any,
    route: str,
    make: Callable[[Any], Any],
    status: int,
    words: str,
) -> None:
    prepare = server.prepare_chat if route == "chat" else server.prepare_ergo
    with pytest.raises(RequestError) as caught:
        prepare(make(sample))
    assert caught.value.status == status
    assert words in caught.value.message
    assert caught.value.body()["error"]["message"] == caught.value.message
    assert not engine.calls
    # and the model keeps serving
    assert server.run_chat([server.prepare_chat(chat_body("still there?"))])[0]["choices"]


def test_pillow_decompression_bomb_is_a_413_even_above_our_own_limit(
    tiny_model_dir: Path, tokenizer: Any
) -> None:
    lenient = RequestLimits(max_image_pixels=10**12)
    model = make_model(tiny_model_dir, ScriptedEngine(tokenizer), limits=lenient)
    with pytest.raises(RequestError, match="decompression bomb") as caught:
        model.prepare_chat(chat_body(image_message(data_url(png_header(20000, 20000)))))
    assert caught.value.status == 413


def test_a_truncated_image_fails_the_episode_with_a_400(server: ServingModel, sample: Any) -> None:
    item = server.prepare_ergo({"image": data_url(_truncated_png(sample)), "question": "q"})
    [result] = server.run_ergo([item])
    assert isinstance(result, RequestError) and result.status == 400
    assert "cannot decode image" in result.message


def test_remote_urls_are_fetched_only_when_allowed(
    tiny_model_dir: Path, tokenizer: Any, sample: Any
) -> None:
    fetched: list[str] = []

    def fetch(url: str, limits: RequestLimits) -> bytes:
        fetched.append(url)
        return sample.image

    model = make_model(
        tiny_model_dir,
        ScriptedEngine(tokenizer),
        limits=RequestLimits(max_image_pixels=4_000_000, allow_remote_urls=True),
        fetch=fetch,
    )
    prepared = model.prepare_chat(chat_body(image_message("https://example.com/a.png")))
    assert fetched == ["https://example.com/a.png"] and len(prepared.prompt.images) == 1


def test_an_engine_failure_makes_the_replica_unhealthy_at_once(
    server: ServingModel, engine: Any
) -> None:
    item = server.prepare_chat(chat_body("hi"))
    assert server.health()["status"] == "ready"
    engine.fail = True
    with pytest.raises(EngineDead, match="engine died"):
        server.run_chat([item])
    engine.fail = False  # a failed engine is gone: nothing reaches it again, nothing waits
    with pytest.raises(EngineDead, match="the engine is dead"):
        server.health()
    with pytest.raises(EngineDead):
        server.run_chat([item])
    assert len(engine.calls) == 1  # the probe before the failure


def test_serving_config_answers_once_per_request() -> None:
    with pytest.raises(ValueError, match="group_size must be 1"):
        ServingConfig(episode=EpisodeConfig(group_size=4))


def test_episodes_must_fit_the_context(tiny_model_dir: Path, tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="max_model_len"):
        ServingModel(
            ServingConfig(),  # 1280 + 1280 vision tokens and 2 x 256 new tokens
            EngineConfig(backend="hf", model=str(tiny_model_dir), max_model_len=2048),
            engine=ScriptedEngine(tokenizer),
        )


def _request(body: bytes, headers: dict[str, str] | None = None) -> Any:
    from starlette.requests import Request

    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "headers": raw}, receive)


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"x" * 5000, {}, 413, "exceeds the limit of 4096 bytes"),
        (b"{}", {"content-length": "999999"}, 413, "999999 bytes"),
        (b'{"model": ', {}, 400, "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, {}, 400, "not valid JSON"),
    ],
)
def test_request_bodies_are_read_within_the_limit(
    body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    import asyncio

    from jobs.serve import read_json

    with pytest.raises(RequestError) as caught:
        asyncio.run(read_json(_request(body, headers), limit=4096))
    assert caught.value.status == status and words in caught.value.message
    assert asyncio.run(read_json(_request(b'{"a": 1}'), limit=4096)) == {"a": 1}


def test_serve_config_errors_name_the_field() -> None:
    from jobs.config import ConfigError
    from jobs.serve import load_serve_config

    with pytest.raises(ConfigError, match="model"):
        load_serve_config(None)
    with pytest.raises(ConfigError, match=r"autoscaling: .*max_replicas is below min_replicas"):
        load_serve_config(None, "m", ["--autoscaling.min_replicas", "3"])
    with pytest.raises(ConfigError, match=r"serving\.limits\.max_image_pixels"):
        load_serve_config(None, "m", ["--serving.limits.max_image_pixels", "0"])
    config = load_serve_config(None, "m", ["--autoscaling.max_replicas", "4"])
    assert config.autoscaling.as_ray()["max_replicas"] == 4 and config.engine.model == "m"


# ---- served names, prompt files, engine options ---------------------------------------------


def test_aliases_are_listed_and_served_under_the_primary_name(
    tiny_model_dir: Path, tokenizer: Any, sample: Any
) -> None:
    config = ServingConfig(served_model_name="tiny", served_model_aliases=("ergo", "tiny"))
    engine = ScriptedEngine(tokenizer)
    model = ServingModel(
        config.model_copy(update={"episode": make_model(tiny_model_dir, engine).config.episode}),
        EngineConfig(backend="hf", model=str(tiny_model_dir), max_model_len=1024),
        engine=engine,
    )
    assert [m["id"] for m in model.models()["data"]] == ["tiny", "ergo"]
    [reply] = model.run_chat([model.prepare_chat({**chat_body("hi"), "model": "ergo"})])
    assert reply["model"] == "tiny"
    ergo = {"image": data_url(sample.image), "question": "q", "model": "ergo"}
    [answer] = model.run_ergo([model.prepare_ergo(ergo)])
    assert isinstance(answer, dict) and answer["model"] == "tiny"
    with pytest.raises(RequestError) as caught:
        model.prepare_chat({**chat_body("hi"), "model": "gpt-4o"})
    error = caught.value.body()["error"]
    assert caught.value.status == 404 and error["code"] == "model_not_found"
    assert (
        error["message"] == "model 'gpt-4o' is not served here; this server serves 'tiny', 'ergo'"
    )


def test_without_aliases_models_lists_the_one_name(server: ServingModel) -> None:
    assert server.models() == {
        "object": "list",
        "data": [{"id": "tiny", "object": "model", "created": 0, "owned_by": "ergo-rl"}],
    }


def _marked_prompts(tmp_path: Path) -> Path:
    """The default templates with a marker opening the two-stage user turns."""
    from core.prompts import DEFAULT_PROMPTS

    text = DEFAULT_PROMPTS.read_text()
    text = text.replace('coarse = """', 'coarse = """RELEASED ')
    text = text.replace('fine = """', 'fine = """RELEASED ')
    file = tmp_path / "released.toml"
    file.write_text(text)
    return file


def test_the_two_stage_endpoint_runs_under_the_configured_prompts(
    tiny_model_dir: Path, tokenizer: Any, sample: Any, tmp_path: Path
) -> None:
    engine = ScriptedEngine(tokenizer)
    base = make_model(tiny_model_dir, engine).config
    config = base.model_copy(update={"prompts": str(_marked_prompts(tmp_path))})
    model = ServingModel(
        config,
        EngineConfig(backend="hf", model=str(tiny_model_dir), max_model_len=1024),
        engine=engine,
    )
    request = {"image": data_url(sample.image), "question": "q", "options": ["a", "b"]}
    model.run_ergo([model.prepare_ergo(request)])
    first, second = (tokenizer.decode(prompts[0].token_ids) for prompts, _ in engine.calls[-2:])
    assert first.count("RELEASED") == 1 and second.count("RELEASED") == 2


def test_serve_prompts_are_checked_and_fill_the_serving_section(tmp_path: Path) -> None:
    from jobs.config import ConfigError
    from jobs.serve import ServeConfig, load_serve_config

    prompts = str(_marked_prompts(tmp_path))
    config = load_serve_config(None, "m", ["--prompts", prompts])
    assert config.serving.prompts == prompts
    own = load_serve_config(None, "m", ["--prompts", prompts, "--serving.prompts", prompts])
    assert own.serving.prompts == prompts
    built = ServeConfig(
        model="m", engine={"model": "m"}, prompts=prompts, serving=ServingConfig(max_n=2)
    )
    assert built.serving.prompts == prompts and built.serving.max_n == 2
    (tmp_path / "bad.toml").write_text('system = "s"\n')
    for bad, complaint in [("nope.toml", "No such file"), ("bad.toml", "coarse: Field required")]:
        with pytest.raises(ConfigError, match=rf"prompts: .*prompt file \S*{bad}: {complaint}"):
            load_serve_config(None, "m", ["--prompts", str(tmp_path / bad)])
        with pytest.raises(ConfigError, match=r"serving\.prompts: .*prompt file"):
            load_serve_config(None, "m", ["--serving.prompts", str(tmp_path / bad)])


def test_serve_exposes_aliases_and_graph_capture_on_the_command_line() -> None:
    from jobs.serve import load_serve_config

    argv = ["--serving.served-model-aliases", '["ergo"]', "--engine.enforce-eager", "false"]
    config = load_serve_config(None, "m", argv)
    assert config.serving.served_model_aliases == ("ergo",)
    assert config.engine.enforce_eager is False
    assert load_serve_config(None, "m").engine.enforce_eager is True
