"""Images arriving over HTTP: data URLs (remote URLs only when allowed), checked before decoding.

Every image goes through the same gate: its encoded size is capped, its header is read lazily
to learn the format and pixel count, and only an image within `max_image_pixels` is decoded, so
a small file that claims a huge canvas (a decompression bomb) is refused without allocating it.
Pillow's own bomb check (`DecompressionBombError`, raised while opening) maps to the same 413.
Each failure is a `RequestError` with a message that says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from core.geometry import GeometryError, fit_to_budget
from serving.protocol import RequestError

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),", re.ASCII)
_WHITESPACE = re.compile(rb"\s+")


class RequestLimits(BaseModel):
    """What the server accepts (request and image sizes, URLs); over a limit is a 4xx."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_request_bytes: int = Field(32 << 20, ge=1024)
    """Largest request body (413 above it); base64 makes an image about 4/3 its file size."""
    max_image_bytes: int = Field(20 << 20, ge=1)
    """Largest encoded image, after base64 decoding (413 above it)."""
    max_image_pixels: int = Field(64_000_000, ge=1)
    """Largest canvas, width x height as the header declares it, checked before decoding
    (413 above it). 64 MP holds 8K images (33 MP) with room; Pillow's own bomb limit is 179 MP."""
    max_images_per_request: int = Field(4, ge=1)
    """Images one chat request may hold (also capped by the engine's images per prompt)."""
    allow_remote_urls: bool = False
    """Fetch http(s) image URLs. Off by default: a server that fetches URLs for anyone can be
    made to reach internal hosts, so only `data:` URLs are accepted unless this is set."""
    remote_timeout_s: float = Field(10.0, gt=0.0)
    """Time limit of one remote image fetch."""
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
    """Image formats (Pillow's names) that are decoded; others get a 400."""


Fetcher = Callable[[str, RequestLimits], bytes]


@dataclass(frozen=True)
class CheckedImage:
    """Encoded bytes whose header passed the limits; `size` is (width, height)."""

    data: bytes
    format: str
    size: tuple[int, int]


def image_bytes(url: str, limits: RequestLimits, fetch: Fetcher | None = None) -> bytes:
    """The encoded image an `image_url` names: decoded from a data URL or fetched if allowed."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return _data_url_bytes(url, limits)
    if scheme in ("http", "https"):
        if not limits.allow_remote_urls:
            raise RequestError(
                400,
                "remote image URLs are not allowed on this server; send the image inline as a"
                " data: URL (data:image/png;base64,...)",
                "remote_image_not_allowed",
            )
        return (fetch or fetch_remote)(url, limits)
    raise RequestError(
        400,
        f"unsupported image URL {url[:32]!r}: expected a data:image/...;base64, URL",
        "invalid_image_url",
    )


def _data_url_bytes(url: str, limits: RequestLimits) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise RequestError(400, "malformed data URL: expected data:<type>;base64,<data>")
    mime = (match.group("mime") or "").lower()
    if not mime.startswith("image/"):
        raise RequestError(400, f"data URL has media type {mime or 'none'!r}, not image/*")
    if "base64" not in [p.strip().lower() for p in match.group("params").split(";")]:
        raise RequestError(400, "data URL must be base64-encoded (data:image/...;base64,...)")
    payload = _WHITESPACE.sub(b"", url[match.end() :].encode("ascii", "replace"))
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise _too_large_bytes(len(payload) * 3 // 4, limits)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"data URL is not valid base64: {exc}") from exc
    if not data:
        raise RequestError(400, "data URL holds no bytes")
    return data


def fetch_remote(url: str, limits: RequestLimits) -> bytes:
    """GET an image with a timeout, reading at most `max_image_bytes`."""
    import httpx

    chunks, total = [], 0
    try:
        with httpx.stream("GET", url, timeout=limits.remote_timeout_s) as response:
            if response.status_code != 200:
                raise RequestError(400, f"fetching the image gave HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limits.max_image_bytes:
                    raise _too_large_bytes(total, limits)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise RequestError(400, f"cannot fetch the image: {exc}", "image_fetch_failed") from exc
    return b"".join(chunks)


def check_image(data: bytes, limits: RequestLimits, max_tokens: int) -> CheckedImage:
    """Read only the header: format, canvas size within limits, a size our geometry can resize."""
    if len(data) > limits.max_image_bytes:
        raise _too_large_bytes(len(data), limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # lazy: decodes nothing yet
                fmt, size = str(image.format), image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(
            413, f"image refused as a decompression bomb: {exc}", "image_too_large"
        ) from exc
    except Exception as exc:  # Pillow raises many types for data that is not an image
        raise RequestError(
            400, f"the image bytes are not a readable image ({type(exc).__name__})", "invalid_image"
        ) from exc
    width, height = size
    if width * height > limits.max_image_pixels:
        raise RequestError(
            413,
            f"image is {width}x{height} = {width * height} pixels; the limit is"
            f" {limits.max_image_pixels}",
            "image_too_large",
        )
    if fmt not in limits.formats:
        raise RequestError(400, f"image format {fmt} is not accepted ({', '.join(limits.formats)})")
    try:
        fit_to_budget(width, height, max_tokens)
    except GeometryError as exc:
        raise RequestError(400, f"image cannot be served: {exc}", "invalid_image") from exc
    return CheckedImage(data, fmt, size)


def decode_checked(image: CheckedImage) -> Image.Image:
    """Decode an image that passed `check_image`, as RGB; a corrupt body is a 400."""
    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except Exception as exc:
        raise RequestError(
            400, f"cannot decode the image ({type(exc).__name__}: {exc})", "invalid_image"
        ) from exc


def _too_large_bytes(size: int, limits: RequestLimits) -> RequestError:
    return RequestError(
        413,
        f"image is {size} bytes; the limit is {limits.max_image_bytes}",
        "image_too_large",
    )
