"""A fake OpenAI-compatible speech server, shaped like Kokoro-FastAPI (port 8880).

- ``POST /v1/audio/speech``: ``model`` (kokoro, tts-1, tts-1-hd), ``input`` (≤ 4096 characters),
  ``voice`` (a Kokoro voice, a mix like ``af_bella(2)+af_sky(1)``, or an OpenAI voice name),
  ``response_format`` (mp3 default, opus, aac, flac, wav, pcm), ``speed`` 0.25 to 4.0, ``stream``
  (default true: a chunked raw audio body, not SSE). ``pcm`` is headerless s16le 24 kHz mono.
- ``GET /v1/audio/voices`` → ``{"voices": [...]}``.

Errors are ``{"detail": {"error", "message", "type"}}``. A bearer key is only checked when the fake
is given one (Kokoro-FastAPI has none; OpenAI itself requires one).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.audio import (
    Synthesizer,
    encode_with_ffmpeg,
    resample,
    run_synthesizer,
    wav_bytes,
)
from tests.fakes.base import BilledCall, Clock, FakeServer, ScriptedResponse
from tests.fakes.together import KOKORO_VOICES

__all__ = ["CONTENT_TYPES", "MAX_INPUT", "MODELS", "OPENAI_VOICES", "FakeOpenAISpeech"]

OUTPUT_RATE = 24_000
MAX_INPUT = 4096
MODELS = ("kokoro", "tts-1", "tts-1-hd")
# OpenAI's names, which Kokoro-FastAPI maps onto its own voices.
OPENAI_VOICES = ("alloy", "ash", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_MIX_PART = re.compile(r"^([a-z]{2}_[a-z]+)(?:\((\d+(?:\.\d+)?)\))?$")


def _error(status: int, error: str, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"detail": {"error": error, "message": message, "type": kind}}, status=status
    )


def _invalid(message: str) -> web.Response:
    return _error(400, "validation_error", message, "invalid_request_error")


@dataclass(frozen=True)
class _Request:
    model: str
    text: str
    voice: str
    response_format: str
    speed: float
    stream: bool


class FakeOpenAISpeech(FakeServer):
    """Simulated OpenAI-compatible TTS server (Kokoro-FastAPI flavour).

    Args:
        api_key: when set, ``Authorization: Bearer <api_key>`` is required (else 401).
        voices: what ``/v1/audio/voices`` lists and mixes may use (default: Kokoro's voices).
        chunk_bytes: size of each streamed body chunk.
        chunk_delay: seconds the server waits before each streamed chunk after the first.
        synthesizer, clock: see :class:`~tests.fakes.base.FakeServer`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voices: Iterable[str] = KOKORO_VOICES,
        chunk_bytes: int = 4096,
        chunk_delay: float = 0.0,
        synthesizer: Synthesizer | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(synthesizer=synthesizer, clock=clock)
        self.api_key = api_key
        self.voices = tuple(voices)
        self.chunk_bytes = chunk_bytes
        self.chunk_delay = chunk_delay

    def inject_error(self, status: int, message: str, *, count: int = 1) -> None:
        """Script ``count`` Kokoro-FastAPI-shaped errors for ``POST /v1/audio/speech``."""
        body = {"detail": {"error": "server_error", "message": message, "type": "server_error"}}
        self.script("POST", "/v1/audio/speech", *([ScriptedResponse(status, body)] * count))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_get("/v1/audio/voices", self._voices)

    def _authorize(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "unauthorized", "Invalid or missing API key", "authentication_error")

    def _check_voice(self, voice: str) -> str | None:
        if voice in self.voices or voice in OPENAI_VOICES:
            return None
        for part in voice.split("+"):
            found = _MIX_PART.match(part.strip())
            if found is None or found.group(1) not in self.voices:
                return f"Voice '{part.strip()}' not found"
        return None

    def _parse(self, body: Any) -> _Request | web.Response:
        if not isinstance(body, dict):
            return _invalid("Request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or model not in MODELS:
            return _invalid(f"Unsupported model: {model!r}; use one of {', '.join(MODELS)}")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return _invalid("'input' is required and must be a non-empty string")
        if len(text) > MAX_INPUT:
            return _invalid(f"'input' is {len(text)} characters; the maximum is {MAX_INPUT}")
        voice = body.get("voice")
        if not isinstance(voice, str) or not voice.strip():
            return _invalid("'voice' is required")
        problem = self._check_voice(voice)
        if problem:
            return _invalid(problem)
        response_format = body.get("response_format", "mp3")
        if response_format not in CONTENT_TYPES:
            return _invalid(f"'response_format' must be one of {', '.join(CONTENT_TYPES)}")
        speed = body.get("speed", 1.0)
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            return _invalid("'speed' must be a number")
        if not 0.25 <= speed <= 4.0:
            return _invalid("'speed' must be between 0.25 and 4.0")
        stream = body.get("stream", True)  # Kokoro-FastAPI streams unless told not to
        if not isinstance(stream, bool):
            return _invalid("'stream' must be a boolean")
        return _Request(model, text, voice, response_format, float(speed), stream)

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        return web.json_response({"voices": list(self.voices)})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        try:
            raw: Any = json.loads(await request.read())
        except ValueError:
            return _invalid("Request body is not valid JSON")
        parsed = self._parse(raw)
        if isinstance(parsed, web.Response):
            return parsed
        pcm, rate = await run_synthesizer(self.synthesizer, parsed.text)
        # Speed: shorter (or longer) audio at the same nominal rate.
        pcm = resample(pcm, rate, round(OUTPUT_RATE / parsed.speed))
        audio = await self._encode(pcm, parsed.response_format)
        self.billed.append(BilledCall(parsed.model, parsed.text))
        content_type = CONTENT_TYPES[parsed.response_format]
        if not parsed.stream:
            return web.Response(body=audio, headers={"Content-Type": content_type})
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for index in range(0, len(audio), self.chunk_bytes):
                if index and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(audio[index : index + self.chunk_bytes])
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream
        return response

    @staticmethod
    async def _encode(pcm: bytes, response_format: str) -> bytes:
        if response_format == "pcm":
            return pcm
        if response_format == "wav":
            return wav_bytes(pcm, OUTPUT_RATE)
        return await encode_with_ffmpeg(pcm, OUTPUT_RATE, response_format)
