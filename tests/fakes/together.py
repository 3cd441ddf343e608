"""A fake Together AI speech API (``https://api.together.xyz``), as documented.

- ``POST /v1/audio/speech``: ``Authorization: Bearer KEY``; body ``model``, ``input``, ``voice``
  (required), ``response_format`` (wav | mp3 | raw, default wav), ``response_encoding``
  (pcm_f32le default | pcm_s16le | pcm_mulaw | pcm_alaw, raw only), ``sample_rate`` (44100),
  ``bit_rate`` (mp3), ``language`` (en), ``stream`` (false). Cartesia models honour
  ``sample_rate`` and ``response_encoding``; Orpheus and Kokoro always give 24 kHz s16le.
  ``stream: true`` (raw only) answers server-sent events ending in ``data: [DONE]``.
- ``GET /v1/voices?model=...`` → ``{"data": [{"model": ..., "voices": [{"id", "name"}]}]}``.

Errors are ``{"error": {"message", "type", "param", "code"}}``. Every speech response carries
``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset``; a 429 adds
``Retry-After`` and ``retry-after-ms``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiohttp import web

from tests.fakes.audio import (
    PcmEncoding,
    Synthesizer,
    encode_pcm,
    encode_with_ffmpeg,
    resample,
    run_synthesizer,
    wav_bytes,
)
from tests.fakes.base import BilledCall, Clock, FakeServer, RateLimiter, ScriptedResponse

__all__ = ["KOKORO_VOICES", "MODELS", "ChunkShape", "FakeTogether", "TogetherModel"]

DEFAULT_API_KEY = "test-together-key"
NATIVE_RATE = 24_000  # Orpheus and Kokoro "always output at 24000 Hz" (seed 004)

ChunkShape = Literal["delta", "b64"]

CARTESIA_VOICES = ("laidback woman", "friendly sidekick", "british reading lady", "newsman")
KOKORO_VOICES = (
    *("af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore", "af_nicole"),
    *("af_nova", "af_river", "af_sarah", "af_sky", "am_adam", "am_echo", "am_eric"),
    *("am_fenrir", "am_liam", "am_michael", "am_onyx", "am_puck", "bf_alice", "bf_emma"),
    *("bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george", "bm_lewis"),
)
ORPHEUS_VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")


@dataclass(frozen=True)
class TogetherModel:
    family: Literal["cartesia", "kokoro", "orpheus"]
    voices: tuple[str, ...]

    @property
    def fixed_output(self) -> bool:
        """Orpheus and Kokoro ignore sample_rate and response_encoding (seed 004)."""
        return self.family != "cartesia"


MODELS: dict[str, TogetherModel] = {
    "cartesia/sonic": TogetherModel("cartesia", CARTESIA_VOICES),
    # Not in the page's option list, but its own example uses it.
    "cartesia/sonic-2": TogetherModel("cartesia", CARTESIA_VOICES),
    "hexgrad/Kokoro-82M": TogetherModel("kokoro", KOKORO_VOICES),
    "canopylabs/orpheus-3b-0.1-ft": TogetherModel("orpheus", ORPHEUS_VOICES),
}

FORMATS = ("mp3", "wav", "raw")
ENCODINGS = ("pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw")
BIT_RATES = (32000, 64000, 96000, 128000, 192000)
LANGUAGES = (
    *("en", "de", "fr", "es", "hi", "it", "ja", "ko", "nl", "pl", "pt", "ru", "sv", "tr", "zh"),
)
_MIX_PART = re.compile(r"^([a-z]{2}_[a-z]+)(?:\((\d+(?:\.\d+)?)\))?$")


def voice_id(model: str, name: str) -> str:
    """Cartesia voices have opaque ids; the others are their own id."""
    if MODELS[model].family == "cartesia":
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cartesia/{name}"))
    return name


def check_voice(model: str, voice: str) -> str | None:
    """Problem with ``voice`` for ``model`` or None. Kokoro accepts mixes: ``a(2)+b(1)``."""
    known = MODELS[model].voices
    if voice in known or voice in {voice_id(model, name) for name in known}:
        return None
    if "+" not in voice:
        return f"Voice '{voice}' is not available for model '{model}'"
    if MODELS[model].family != "kokoro":
        return f"Voice mixing is only supported by hexgrad/Kokoro-82M, not '{model}'"
    for part in voice.split("+"):
        found = _MIX_PART.match(part.strip())
        if found is None:
            return f"Invalid voice mix component '{part}'"
        if found.group(1) not in known:
            return f"Voice '{found.group(1)}' is not available for model '{model}'"
        if found.group(2) is not None and float(found.group(2)) <= 0:
            return f"Voice weight for '{found.group(1)}' must be positive"
    return None


def _error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class _Request:
    model: str
    text: str
    voice: str
    response_format: str
    encoding: PcmEncoding
    sample_rate: int
    bit_rate: int | None
    stream: bool


def _invalid(message: str, param: str) -> web.Response:
    body = _error_body(message, "invalid_request_error", param, "invalid_parameter")
    return web.json_response(body, status=400)


def parse_speech_request(body: Any) -> _Request | web.Response:
    """Validate a speech body per seed 004; a 400/404 error response when invalid."""
    if not isinstance(body, dict):
        return _invalid("Request body must be a JSON object", "body")
    for name in ("model", "input", "voice"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            return _invalid(f"'{name}' is required and must be a non-empty string", name)
    model = body["model"]
    if model not in MODELS:
        error = _error_body(
            f"Unable to access model {model}", "invalid_request_error", "model", "model_not_found"
        )
        return web.json_response(error, status=404)
    problem = check_voice(model, body["voice"])
    if problem:
        return _invalid(problem, "voice")
    enums: dict[str, tuple[Any, ...]] = {
        "response_format": FORMATS,
        "response_encoding": ENCODINGS,
        "bit_rate": BIT_RATES,
        "language": LANGUAGES,
    }
    for name, allowed in enums.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or value not in allowed):
            options = ", ".join(str(option) for option in allowed)
            return _invalid(f"'{name}' must be one of: {options}", name)
    rate = body.get("sample_rate", 44100)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 192000:
        return _invalid("'sample_rate' must be an integer number of Hz", "sample_rate")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return _invalid("'stream' must be a boolean", "stream")
    response_format = body.get("response_format", "wav")
    if stream and response_format != "raw":
        return _invalid("Streaming supports only response_format 'raw'", "response_format")
    return _Request(
        model,
        body["input"],
        body["voice"],
        response_format,
        cast(PcmEncoding, body.get("response_encoding", "pcm_f32le")),
        rate,
        body.get("bit_rate"),
        stream,
    )


@dataclass(frozen=True)
class _StreamError:
    after_chunks: int
    message: str
    text: str | None = None  # only a stream of a text containing it


class FakeTogether(FakeServer):
    """Simulated Together AI ``/v1/audio/speech`` and ``/v1/voices``.

    Args:
        api_key: the one valid bearer token.
        rate_limit_per_minute: sliding-window limit reported in ``x-ratelimit-*`` (default 600).
        chunk_shape: streamed event shape: ``"delta"`` (current docs:
            ``{"type": "conversation.item.audio_output.delta", "item_id": "tts_1", "delta"}``) or
            ``"b64"`` (OpenAPI spec / SDK: ``{"object": "audio.tts.chunk", "model", "b64"}``).
        chunk_seconds: audio per streamed event.
        chunk_delay: seconds the server waits before each event after the first.
        synthesizer, clock: see :class:`~tests.fakes.base.FakeServer`.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        rate_limit_per_minute: int = 600,
        chunk_shape: ChunkShape = "delta",
        chunk_seconds: float = 0.1,
        chunk_delay: float = 0.0,
        synthesizer: Synthesizer | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(synthesizer=synthesizer, clock=clock)
        self.api_key = api_key
        self.limiter = RateLimiter(rate_limit_per_minute, self.clock)
        self.chunk_shape: ChunkShape = chunk_shape
        self.chunk_seconds = chunk_seconds
        self.chunk_delay = chunk_delay
        self.streams_finished = 0
        self._stream_errors: deque[_StreamError] = deque()

    # -- public helpers for tests ---------------------------------------------------------------
    def inject_error(
        self,
        status: int,
        message: str,
        *,
        kind: str = "server_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
        path: str = "/v1/audio/speech",
    ) -> None:
        """Script ``count`` Together-shaped errors for ``POST path``."""
        reply = ScriptedResponse(status, _error_body(message, kind, None, code), headers or {})
        self.script("POST", path, *([reply] * count))

    def inject_rate_limit(self, retry_after: float = 1.0, count: int = 1) -> None:
        """The next ``count`` speech calls get 429 with ``Retry-After`` and ``retry-after-ms``."""
        headers = {
            "Retry-After": str(math.ceil(retry_after)),
            "retry-after-ms": str(round(retry_after * 1000)),
            "x-ratelimit-remaining": "0",
        }
        self.inject_error(
            429, "Rate limit exceeded", kind="rate_limit_exceeded", headers=headers, count=count
        )

    def inject_overload(self, count: int = 1) -> None:
        """The next ``count`` speech calls get 503 (platform overloaded)."""
        self.inject_error(503, "The server is overloaded, please try again later", count=count)

    def inject_stream_error(
        self, after_chunks: int = 1, message: str = "Inference failed", *, text: str | None = None
    ) -> None:
        """The next stream (of a text containing ``text``, when given: sentences spoken at once
        reach the server in no fixed order) sends ``after_chunks`` audio events, then an error
        event, then stops."""
        self._stream_errors.append(_StreamError(after_chunks, message, text))

    def _take_stream_error(self, text: str) -> _StreamError | None:
        for failure in self._stream_errors:
            if failure.text is None or failure.text in text:
                self._stream_errors.remove(failure)
                return failure
        return None

    def output_rate(self, model: str, requested: int) -> int:
        return NATIVE_RATE if MODELS[model].fixed_output else requested

    # -- routes -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_get("/v1/voices", self._voices)

    def _authorize(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        message = "Invalid API key provided. You can find your API key at api.together.ai."
        body = _error_body(message, "invalid_request_error", None, "invalid_api_key")
        return web.json_response(body, status=401)

    def _rate_headers(self) -> dict[str, str]:
        # x-ratelimit-reset: seconds until the window frees a slot (its unit is not documented).
        reset = max(0.0, self.limiter.reset_at() - self.clock())
        return {
            "x-ratelimit-limit": str(self.limiter.limit),
            "x-ratelimit-remaining": str(self.limiter.remaining),
            "x-ratelimit-reset": str(math.ceil(reset)),
        }

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        wanted = request.query.get("model")
        if wanted is not None and wanted not in MODELS:
            error = _error_body(f"Unknown model {wanted}", "invalid_request_error", "model", None)
            return web.json_response(error, status=404)
        data = [
            {
                "model": name,
                "voices": [{"id": voice_id(name, v), "name": v} for v in model.voices],
            }
            for name, model in MODELS.items()
            if wanted in (None, name)
        ]
        return web.json_response({"data": data})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        if not self.limiter.acquire():
            wait = max(0.0, self.limiter.reset_at() - self.clock())
            headers = {
                **self._rate_headers(),
                "Retry-After": str(math.ceil(wait)),
                "retry-after-ms": str(math.ceil(wait * 1000)),
            }
            message = f"Rate limit exceeded: {self.limiter.limit} requests per minute"
            body = _error_body(message, "rate_limit_exceeded", None, "rate_limit_exceeded")
            return web.json_response(body, status=429, headers=headers)
        try:
            raw: Any = json.loads(await request.read())
        except ValueError:
            return _invalid("Request body is not valid JSON", "body")
        parsed = parse_speech_request(raw)
        if isinstance(parsed, web.Response):
            parsed.headers.update(self._rate_headers())
            return parsed
        pcm, rate = await run_synthesizer(self.synthesizer, parsed.text)
        target = self.output_rate(parsed.model, parsed.sample_rate)
        pcm = resample(pcm, rate, target)
        self.billed.append(BilledCall(parsed.model, parsed.text))
        headers = self._rate_headers()
        if parsed.stream:
            return await self._stream(request, parsed, pcm, target, headers)
        if parsed.response_format == "wav":
            return web.Response(
                body=wav_bytes(pcm, target), content_type="audio/wav", headers=headers
            )
        if parsed.response_format == "mp3":
            bit_rate = parsed.bit_rate or 128000
            audio = await encode_with_ffmpeg(pcm, target, "mp3", bit_rate=bit_rate)
            return web.Response(body=audio, content_type="audio/mpeg", headers=headers)
        encoding = "pcm_s16le" if MODELS[parsed.model].fixed_output else parsed.encoding
        audio = encode_pcm(pcm, encoding)
        return web.Response(body=audio, content_type="application/octet-stream", headers=headers)

    def _event(self, model: str, chunk: bytes) -> dict[str, Any]:
        encoded = base64.b64encode(chunk).decode()
        if self.chunk_shape == "delta":
            return {
                "type": "conversation.item.audio_output.delta",
                "item_id": "tts_1",
                "delta": encoded,
            }
        return {"object": "audio.tts.chunk", "model": model, "b64": encoded}

    async def _stream(
        self,
        request: web.Request,
        parsed: _Request,
        pcm: bytes,
        rate: int,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        encoding = "pcm_s16le" if MODELS[parsed.model].fixed_output else parsed.encoding
        step = max(2, int(rate * self.chunk_seconds) * 2)
        chunks = [encode_pcm(pcm[i : i + step], encoding) for i in range(0, len(pcm), step)]
        failure = self._take_stream_error(parsed.text)
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for index, chunk in enumerate(chunks):
                if failure is not None and index == failure.after_chunks:
                    break
                if index and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await self._send(response, self._event(parsed.model, chunk))
            if failure is not None:
                error = _error_body(failure.message, "server_error", None, None)
                await self._send(response, error)
            else:
                await response.write(b"data: [DONE]\n\n")
                self.streams_finished += 1
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, event: Mapping[str, Any]) -> None:
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
