"""Together AI: Cartesia Sonic, Kokoro 82M and Orpheus 3B through ``POST /v1/audio/speech``.

API facts (Together's API page for ``/v1/audio/speech``, its error-codes page and SDK): auth is
``Authorization: Bearer KEY``; the body is ``model``, ``input``, ``voice`` and the options in
:mod:`integrations.together.models`; a plain call answers with the audio itself (``wav``, ``mp3``
or headerless ``raw`` PCM), ``stream: true`` (``raw`` only) with server-sent events
(:mod:`integrations.together.stream`). Voices are listed per model at ``GET /v1/voices``.
Errors are ``{"error": {"message", ...}}``; 402 is the spending limit, 503 "Engine Overloaded".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot.errors import (
    InsufficientCredits,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRequestError,
    ProviderUnavailable,
    SynthesisFailed,
    UnknownModel,
    UnknownVoice,
)
from bot.ops.config import LimitSettings, Settings
from bot.providers.base import Provider, SynthesisJob, Synthesized, Usage, api_key
from bot.providers.http import HttpClient, StatusRule, encoding_from_response, error_text
from bot.providers.ratelimit import remaining_calls
from bot.speech import AudioChunk, AudioEncoding, Voice
from integrations.together.models import (
    FIXED_RATE,
    MODELS,
    KokoroMixPart,
    MixSyntaxError,
    TogetherModel,
    parse_kokoro_mix,
)
from integrations.together.stream import speech_pcm

__all__ = [
    "TOGETHER_STATUSES",
    "InvalidVoiceMix",
    "TogetherProvider",
    "TogetherSettings",
]

log = logging.getLogger(__name__)

API_KEY_ENV = "TOGETHER_API_KEY"
SPEECH_PATH = "/v1/audio/speech"
VOICES_PATH = "/v1/voices"
# Oyez asks for s16le when it chooses a raw encoding (the API's default is pcm_f32le): it is what
# Kokoro and Orpheus send anyway, and half the bytes of f32le.
RAW_ENCODING = "pcm_s16le"
_SAMPLE_WIDTH = {
    AudioEncoding.PCM_S16LE: 2,
    AudioEncoding.PCM_F32LE: 4,
    AudioEncoding.PCM_MULAW: 1,
    AudioEncoding.PCM_ALAW: 1,
}


class TogetherSettings(BaseModel):
    """``providers.together`` in the configuration."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(None, description=f"Else ${API_KEY_ENV}")
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.together.xyz")
    default_model: str = "hexgrad/Kokoro-82M"
    default_voice: str = Field("af_heart", description="A voice of default_model")
    stream: bool = Field(True, description="Stream raw PCM as it is synthesized")
    voices_ttl_s: float = Field(
        3600, ge=0, description="How long a model's voice list is kept (seconds; 0: never)"
    )
    timeout_s: float = Field(
        60, gt=0, le=600, description="Limit for one non-streaming call or one voice list"
    )
    stream_read_timeout_s: float = Field(
        30, gt=0, le=600, description="Longest wait for the next bytes of a stream"
    )

    @field_validator("default_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model; known: {', '.join(MODELS)}")
        return value


#: Together's own statuses on top of the shared table (its error-codes page): 402 the spending
#: limit, 422 an invalid request, 408 a timeout to retry later.
TOGETHER_STATUSES: Mapping[int, StatusRule] = {
    402: InsufficientCredits,
    408: ProviderUnavailable,
    422: ProviderRequestError,
}


class InvalidVoiceMix(UnknownVoice):
    """A Kokoro voice mix refused before any request; ``component`` is the part at fault.

    Without ``problem`` the component is an unknown voice, and the message lists the allowed ones.
    """

    def __init__(
        self,
        mix: str,
        component: str,
        allowed: Iterable[str],
        provider: str,
        problem: str | None = None,
    ) -> None:
        super().__init__(component, allowed, provider)
        self.mix = mix
        self.component = component
        detail = f"component {component!r}: {problem}" if problem else str(self)
        self.args = (f"voice mix {mix!r}: {detail}",)


@dataclass(frozen=True, slots=True)
class _Call:
    """One speech request body and what the server will send back for it."""

    payload: dict[str, Any]
    encoding: AudioEncoding | None  # raw PCM's encoding; None for wav/mp3 (read from the body)
    sample_rate: int


class TogetherProvider(Provider):
    """Speech from Together AI. Raises :class:`bot.errors.ProviderError` subclasses."""

    kind = "together"
    settings_model = TogetherSettings
    streams = True
    paid = True
    # Together's limits are per model and change with the account tier: no per-minute default,
    # its 429s carry the wait (Retry-After / retry-after-ms); keep concurrency modest.
    default_limits = LimitSettings(max_concurrent=4)

    def __init__(
        self, settings: TogetherSettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: TogetherSettings = settings
        self._api_key = api_key(settings.api_key, API_KEY_ENV)
        self.http = HttpClient(
            self.name,
            str(settings.base_url),
            {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {},
            timeout_s=settings.timeout_s,
            statuses=TOGETHER_STATUSES,
        )
        # model → (monotonic expiry, its voices)
        self._voices: dict[str, tuple[float, list[Voice]]] = {}
        self._voices_lock = asyncio.Lock()

    def configuration_problem(self) -> str | None:
        if not self._api_key:
            return f"no API key: set {API_KEY_ENV} or providers.{self.name}.api_key"
        return None

    def _require_key(self, model: str) -> None:
        problem = self.configuration_problem()
        if problem:
            raise ProviderAuthError(self.name, problem, model=model)

    def _model(self, name: str) -> TogetherModel:
        model = MODELS.get(name)
        if model is None:
            raise UnknownModel(name, self.name, MODELS)
        return model

    # -- voices ------------------------------------------------------------------------------
    async def model_voices(self, model: TogetherModel) -> list[Voice]:
        """``model``'s voices, from ``GET /v1/voices?model=...``, kept ``voices_ttl_s``."""
        self._require_key(model.name)
        async with self._voices_lock:
            cached = self._voices.get(model.name)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            voices = await self._fetch_voices(model)
            if self.settings.voices_ttl_s > 0:
                expiry = time.monotonic() + self.settings.voices_ttl_s
                self._voices[model.name] = (expiry, voices)
            return voices

    async def _fetch_voices(self, model: TogetherModel) -> list[Voice]:
        async with self.http.request(
            "GET", VOICES_PATH, model=model.name, params={"model": model.name}
        ) as response:
            raw = await response.read()
        try:
            entries = json.loads(raw)["data"]
            voices = [
                Voice(self.name, model.name, str(v.get("id") or v["name"]), str(v["name"]))
                for entry in entries
                if entry.get("model") == model.name
                for v in entry["voices"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProviderError(
                self.name, "the voice list cannot be read", model=model.name
            ) from None
        log.debug("%s: %d voices for %s", self.name, len(voices), model.name)
        return voices

    async def list_voices(self) -> list[Voice]:
        """Every model's voices, the default model's first; a model the voice list does not
        know (404) is left out. Raises ProviderAuthError without a key."""
        default = self._model(self.settings.default_model)
        voices: list[Voice] = []
        for model in [default, *(m for m in MODELS.values() if m is not default)]:
            try:
                voices += await self.model_voices(model)
            except ProviderNotFound as exc:
                log.warning("%s: no voice list for %s: %s", self.name, model.name, exc.detail)
        return voices

    def default_voice_id(self) -> str:
        return self.settings.default_voice

    async def resolve_voice(self, voice: str | None, model: str | None) -> Voice:
        """A voice of ``model`` (default: ``default_model``), by id or name, case-insensitively.

        With no model named, a voice missing from the default model is looked for in the others.
        Kokoro also takes mixes (``af_bella+af_heart``, ``af_bella(2)+af_heart(1)``): every
        component must be one of its voices and every weight positive. Raises
        :class:`UnknownModel`, :class:`UnknownVoice` (:class:`InvalidVoiceMix` for mixes).
        """
        chosen = self._model(model or self.settings.default_model)
        if voice is None:
            is_default = chosen.name == self.settings.default_model
            voice = self.settings.default_voice if is_default else chosen.default_voice
        voices = await self.model_voices(chosen)
        found = _find(voices, voice)
        if found is None and ("+" in voice or "(" in voice):
            return self._mix(chosen, voice, voices)
        if found is None and model is None:
            found = _find(await self.list_voices(), voice)
        if found is None:
            raise UnknownVoice(voice, [v.name for v in voices], self.name)
        return found

    def _mix(self, model: TogetherModel, mix: str, voices: list[Voice]) -> Voice:
        allowed = [v.name for v in voices]
        if not model.mixes:
            mixers = ", ".join(m.name for m in MODELS.values() if m.mixes)
            problem = f"only {mixers} mixes voices; {model.name} takes one voice"
            raise InvalidVoiceMix(mix, mix, allowed, self.name, problem)
        try:
            parts = parse_kokoro_mix(mix)
        except MixSyntaxError as exc:
            raise InvalidVoiceMix(mix, exc.component, allowed, self.name, exc.problem) from None
        if len(parts) < 2:
            raise InvalidVoiceMix(mix, mix, allowed, self.name, "a mix joins two or more voices")
        resolved = []
        for part in parts:
            found = _find(voices, part.voice)
            if found is None:
                raise InvalidVoiceMix(mix, part.voice, allowed, self.name)
            resolved.append(KokoroMixPart(found.id, part.weight))
        mix_id = "+".join(str(part) for part in resolved)
        return Voice(self.name, model.name, mix_id, f"mix of {mix_id}")

    def options_model(self, voice: Voice) -> type[BaseModel]:
        return self._model(voice.model).options

    # -- synthesis ---------------------------------------------------------------------------
    def _call(self, job: SynthesisJob, *, stream: bool) -> _Call:
        """The request body: documented fields only, each chosen value sent explicitly."""
        model = self._model(job.voice.model)
        options = model.options.model_validate(dict(job.options))
        response_format = "raw" if stream else options.response_format or "wav"
        payload: dict[str, Any] = {
            "model": model.name,
            "input": job.text,  # sound tags such as <sigh> pass through untouched
            "voice": job.voice.id,
            "response_format": response_format,
        }
        payload.update(options.model_dump(mode="json", exclude_none=True))
        payload["response_format"] = response_format
        encoding: AudioEncoding | None = None
        if response_format == "raw":
            payload["response_encoding"] = options.response_encoding or RAW_ENCODING
            # Orpheus and Kokoro "always return pcm_s16le regardless of this setting".
            encoding = AudioEncoding(
                RAW_ENCODING if model.fixed_output else payload["response_encoding"]
            )
        if stream:
            payload["stream"] = True
        rate = FIXED_RATE if model.fixed_output else int(payload["sample_rate"])
        return _Call(payload, encoding, rate)

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        """The whole utterance: WAV or MP3 as sent, or raw PCM in the encoding asked for."""
        self._require_key(job.voice.model)
        call = self._call(job, stream=False)
        async with self.http.request(
            "POST", SPEECH_PATH, model=job.voice.model, json_body=call.payload
        ) as response:
            body = await response.read()
            content_type = response.headers.get("Content-Type", "")
            usage = _headroom(response.headers)
        if not body or content_type.split(";")[0].strip().lower() == "application/json":
            detail = error_text(body) if body else "no audio"
            raise SynthesisFailed(
                self.name, f"the response is not audio: {detail}", model=job.voice.model
            )
        encoding = call.encoding or encoding_from_response(content_type, body)
        if encoding is None:
            raise SynthesisFailed(
                self.name,
                f"unrecognised audio ({content_type or 'no Content-Type'}, {len(body)} bytes)",
                model=job.voice.model,
            )
        return Synthesized(AudioChunk(body, encoding, call.sample_rate, 1), usage)

    def streams_live(self, job: SynthesisJob) -> bool:
        """Streaming is on and ``job`` asks for raw PCM (the only format the API streams)."""
        return self.settings.stream and job.options.get("response_format") in (None, "raw")

    async def stream(self, job: SynthesisJob) -> AsyncIterator[Synthesized]:
        """Raw PCM chunks (whole samples, mono) as the server sends them.

        Falls back to one :meth:`synthesize` chunk when ``stream`` is off or the request asks
        for ``wav``/``mp3`` (the API streams only ``raw``). Raises :class:`SynthesisFailed` on
        an error event or a stream that ends without ``[DONE]``.
        """
        if not self.streams_live(job):
            yield await self.synthesize(job)
            return
        self._require_key(job.voice.model)
        call = self._call(job, stream=True)
        assert call.encoding is not None  # raw always has one
        width = _SAMPLE_WIDTH[call.encoding]
        async with self.http.request(
            "POST",
            SPEECH_PATH,
            model=job.voice.model,
            json_body=call.payload,
            timeout_s=self.settings.stream_read_timeout_s,
            streaming=True,
        ) as response:
            usage: Usage | None = _headroom(response.headers)  # given with the first piece
            carry = b""  # a sample split between two events
            async for pcm in speech_pcm(response, self.name, job.voice.model):
                whole = len(carry + pcm) // width * width
                pcm, carry = (carry + pcm)[:whole], (carry + pcm)[whole:]
                if pcm:
                    yield Synthesized(AudioChunk(pcm, call.encoding, call.sample_rate, 1), usage)
                    usage = None

    async def aclose(self) -> None:
        await self.http.aclose()


def _headroom(headers: Mapping[str, str]) -> Usage:
    """The rate-limit headroom a successful response reports."""
    remaining, reset = remaining_calls(headers)
    return Usage(rate_limit_remaining=remaining, rate_limit_reset_s=reset)


def _find(voices: list[Voice], wanted: str) -> Voice | None:
    key = wanted.strip().casefold()
    return next((v for v in voices if key in (v.id.casefold(), v.name.casefold())), None)
