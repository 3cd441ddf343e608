"""OpenAI-compatible speech: OpenAI itself, or a self-hosted server such as Kokoro-FastAPI.

API facts (OpenAI's API reference, "Create speech"; Kokoro-FastAPI's README): ``POST
{base}/audio/speech`` takes ``model``, ``input`` (at most 4096 characters), ``voice``,
``response_format`` (``mp3`` default, ``opus``, ``aac``, ``flac``, ``wav``, ``pcm``: s16le 24 kHz
mono) and ``speed`` (0.25 to 4.0), and answers with the audio. Kokoro-FastAPI also streams the
body in chunks with ``stream: true`` and lists voices at ``GET {base}/audio/voices``. Several
instances may be configured; each speaks and reports errors under its own name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from bot.errors import (
    InsufficientCredits,
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailable,
    SynthesisFailed,
)
from bot.ops.config import Settings
from bot.providers.base import Provider, SynthesisJob, Synthesized, api_key
from bot.providers.http import (
    ErrorResponse,
    HttpClient,
    StatusRule,
    encoding_from_response,
    status_error,
)
from bot.speech import AudioChunk, AudioEncoding, Voice

__all__ = [
    "MAX_INPUT",
    "OPENAI_STATUSES",
    "OPENAI_VOICES",
    "OpenAIOptions",
    "OpenAIProvider",
    "OpenAISettings",
]

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
OPENAI_HOST = "api.openai.com"
#: OpenAI's limit on ``input`` (characters).
MAX_INPUT = 4096
#: ``pcm`` is s16le mono at this rate (Hz).
PCM_RATE = 24_000
#: OpenAI's voices (API reference, "Create speech"; marin and cedar were added in 2025), used
#: when a server has no voice list.
OPENAI_VOICES = (
    *("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer"),
    *("verse", "marin", "cedar"),
)

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
_ENCODINGS: dict[str, AudioEncoding] = {
    "mp3": AudioEncoding.MP3,
    "opus": AudioEncoding.OGG_OPUS,
    "aac": AudioEncoding.AAC,
    "flac": AudioEncoding.FLAC,
    "wav": AudioEncoding.WAV,
    "pcm": AudioEncoding.PCM_S16LE,
}
# Formats whose chunks can be played or glued back as they come; the others are one file each.
_STREAMABLE = {"pcm", "mp3", "aac"}


class OpenAISettings(BaseModel):
    """``providers.<name>`` of an OpenAI-compatible provider."""

    model_config = ConfigDict(extra="forbid")

    base_url: AnyHttpUrl = AnyHttpUrl("https://api.openai.com/v1")
    api_key: SecretStr | None = Field(
        None, description=f"Sent as a bearer token; else ${API_KEY_ENV} for the 'openai' instance"
    )
    model: str = "tts-1"
    default_voice: str = Field("alloy", description="Voice used when a request names none")
    response_format: ResponseFormat = "mp3"
    stream: bool = Field(True, description="Ask for a chunked body and play it as it arrives")
    voices: list[str] | None = Field(
        None, description="The voices to offer; None: ask the server, else OpenAI's list"
    )
    voices_ttl_s: float = Field(
        3600, ge=0, description="How long the server's voice list is kept (seconds; 0: never)"
    )
    timeout_s: float = Field(
        60, gt=0, le=600, description="Limit for one call; when streaming, for each read"
    )


class OpenAIOptions(BaseModel):
    """Per-request options. ``speed``: 0.25 to 4.0, 1.0 normal (OpenAI's range)."""

    model_config = ConfigDict(extra="forbid")

    speed: float | None = Field(None, ge=0.25, le=4.0)
    response_format: ResponseFormat | None = None


def _too_many_requests(response: ErrorResponse) -> ProviderError:
    """OpenAI's 429 ``insufficient_quota`` is out of credit, not too fast."""
    if _error_code(response.body) == "insufficient_quota":
        return InsufficientCredits(
            response.provider, response.message, model=response.model, status=response.status
        )
    return status_error(response)


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") or error.get("type") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


#: An OpenAI-compatible server's own statuses on top of the shared table: 422 is FastAPI's
#: validation error, 408 a timeout to retry later, 429 may mean no credit.
OPENAI_STATUSES: Mapping[int, StatusRule] = {
    408: ProviderUnavailable,
    422: ProviderRequestError,
    429: _too_many_requests,
}


class OpenAIProvider(Provider):
    """Speech from an OpenAI-compatible ``/audio/speech`` endpoint; one model per instance."""

    kind = "openai"
    settings_model = OpenAISettings
    streams = True

    def __init__(
        self, settings: OpenAISettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: OpenAISettings = settings
        # The environment's key is OpenAI's: never send it to another instance's server.
        self._api_key = api_key(settings.api_key, API_KEY_ENV if self.name == "openai" else None)
        self.http = HttpClient(
            self.name,
            str(settings.base_url),
            {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {},
            timeout_s=settings.timeout_s,
            statuses=OPENAI_STATUSES,
        )
        self._voices: tuple[float, list[Voice]] | None = None  # (monotonic expiry, voices)

    def configuration_problem(self) -> str | None:
        if not self._api_key and self.settings.base_url.host == OPENAI_HOST:
            hint = f"{API_KEY_ENV} or " if self.name == "openai" else ""
            return f"no API key: set {hint}providers.{self.name}.api_key"
        return None

    # -- voices ------------------------------------------------------------------------------
    async def list_voices(self) -> list[Voice]:
        """The configured ``voices``, else the server's list (kept ``voices_ttl_s``), else
        OpenAI's when the server has no ``/audio/voices`` (404)."""
        if self.settings.voices is not None:
            return self._as_voices(self.settings.voices)
        if self._voices is not None and self._voices[0] > time.monotonic():
            return self._voices[1]
        voices = self._as_voices(await self._fetch_voice_ids())
        if self.settings.voices_ttl_s > 0:
            self._voices = (time.monotonic() + self.settings.voices_ttl_s, voices)
        return voices

    async def _fetch_voice_ids(self) -> list[str]:
        self._require_key(self.settings.model)  # OpenAI answers 401 anyway: not worth a request
        try:
            async with self.http.request(
                "GET", "/audio/voices", model=self.settings.model
            ) as response:
                raw = await response.read()
        except ProviderError as exc:
            if exc.status not in (404, 405):
                raise
            return list(OPENAI_VOICES)  # OpenAI itself has no voice list endpoint
        try:
            listed = json.loads(raw)["voices"]
            ids = [v if isinstance(v, str) else str(v.get("id") or v["name"]) for v in listed]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProviderError(
                self.name, "the voice list cannot be read", model=self.settings.model
            ) from None
        return ids

    def _as_voices(self, ids: list[str]) -> list[Voice]:
        return [Voice(self.name, self.settings.model, voice_id, voice_id) for voice_id in ids]

    def default_voice_id(self) -> str:
        return self.settings.default_voice

    async def resolve_voice(self, voice: str | None, model: str | None) -> Voice:
        """As :meth:`Provider.resolve_voice`, but the configured default voice is always taken:
        compatible servers accept OpenAI's names as aliases without listing them (Kokoro-FastAPI
        maps ``alloy`` to its own voices), and the server is the judge of it."""
        if (voice is None or voice == self.settings.default_voice) and model in (
            None,
            self.settings.model,
        ):
            return self._as_voices([self.settings.default_voice])[0]
        return await super().resolve_voice(voice, model)

    def rate_options(self, voice: Voice, speed: float) -> dict[str, Any]:  # noqa: ARG002 - Provider.rate_options: one rate for all
        """The API's ``speed`` (1.0 normal)."""
        return {"speed": speed}

    def options_model(self, voice: Voice) -> type[BaseModel]:  # noqa: ARG002 - Provider.options_model: one model for all
        return OpenAIOptions

    # -- synthesis ---------------------------------------------------------------------------
    def _payload(self, job: SynthesisJob, response_format: str, *, stream: bool) -> dict[str, Any]:
        """The documented fields only. Raises :class:`InvalidRequest` for over-long input."""
        if len(job.text) > MAX_INPUT:
            raise InvalidRequest(
                f"text is too long for {self.name}/{job.voice.model}: {len(job.text)} "
                f"characters, the speech API takes at most {MAX_INPUT}"
            )
        options = OpenAIOptions.model_validate(dict(job.options))
        payload: dict[str, Any] = {
            "model": job.voice.model,
            "input": job.text,
            "voice": job.voice.id,
            "response_format": response_format,
        }
        if options.speed is not None:
            payload["speed"] = options.speed
        if stream:
            payload["stream"] = True
        return payload

    def _format(self, job: SynthesisJob) -> str:
        return str(job.options.get("response_format") or self.settings.response_format)

    def _require_key(self, model: str) -> None:
        problem = self.configuration_problem()
        if problem:
            raise ProviderAuthError(self.name, problem, model=model)

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        """The whole utterance in ``response_format`` (the Content-Type decides when specific)."""
        response_format = self._format(job)
        payload = self._payload(job, response_format, stream=False)
        self._require_key(job.voice.model)
        async with self.http.request(
            "POST", "/audio/speech", model=job.voice.model, json_body=payload
        ) as response:
            body = await response.read()
            content_type = response.headers.get("Content-Type", "")
        if not body:
            raise SynthesisFailed(self.name, "the response holds no audio", model=job.voice.model)
        if response_format == "pcm":
            return Synthesized(AudioChunk(body, AudioEncoding.PCM_S16LE, PCM_RATE, 1))
        encoding = encoding_from_response(content_type, body) or _ENCODINGS[response_format]
        return Synthesized(AudioChunk(body, encoding, 0, 0))

    def streams_live(self, job: SynthesisJob) -> bool:
        """Streaming is on and ``job``'s format can be cut into pieces (PCM, MP3, AAC)."""
        return self.settings.stream and self._format(job) in _STREAMABLE

    async def stream(self, job: SynthesisJob) -> AsyncIterator[Synthesized]:
        """The body's chunks as they arrive: PCM s16le 24 kHz (whole samples) for ``pcm``, MP3
        or AAC pieces for those (the transcoder joins them). WAV, Opus and FLAC are one file
        each, so they, and everything when ``stream`` is off, come as one :meth:`synthesize`."""
        response_format = self._format(job)
        if not self.streams_live(job):
            yield await self.synthesize(job)
            return
        payload = self._payload(job, response_format, stream=True)
        self._require_key(job.voice.model)
        encoding = _ENCODINGS[response_format]
        rate, channels = (PCM_RATE, 1) if encoding.is_raw_pcm else (0, 0)
        async with self.http.request(
            "POST",
            "/audio/speech",
            model=job.voice.model,
            json_body=payload,
            streaming=True,
        ) as response:
            carry = b""  # half a sample, held until the next piece
            sent = False
            async for piece in response.content.iter_any():
                data = carry + piece
                if encoding.is_raw_pcm:
                    whole = len(data) // 2 * 2
                    data, carry = data[:whole], data[whole:]
                if data:
                    sent = True
                    yield Synthesized(AudioChunk(data, encoding, rate, channels))
        if not sent:
            raise SynthesisFailed(self.name, "the stream held no audio", model=job.voice.model)

    async def aclose(self) -> None:
        await self.http.aclose()
