"""Google Cloud Text-to-Speech: its Standard, WaveNet, Neural2, Studio and Chirp 3 HD voices,
through the REST API v1 with an API key.

API facts (Google's REST reference for ``text.synthesize`` and ``voices.list``, its "Use API
keys" and quotas pages, and the ``google.rpc`` error model):

- ``POST {base}/v1/text:synthesize`` takes ``input.text``, ``voice.languageCode`` (required) and
  ``voice.name``, ``audioConfig.audioEncoding`` (required: ``LINEAR16`` is a WAV file, ``MP3``,
  ``OGG_OPUS``…), ``speakingRate`` (0.25 to 2.0, as AudioConfig's reference gives it since
  2025; it said 4.0 before), ``pitch`` (-20 to 20 semitones), ``volumeGainDb`` (-96 to 16) and
  ``sampleRateHertz``; it answers ``{"audioContent": base64}``.
  The input is at most 5,000 bytes; the default quota is 1,000 requests a minute.
- ``GET {base}/v1/voices`` lists ``{"voices": [{"languageCodes", "name", "ssmlGender",
  "naturalSampleRateHertz"}]}``; a name reads ``<language>-<region>-<type>-<variant>``
  (``en-US-Neural2-J``, ``en-US-Chirp3-HD-Kore``): the type is this provider's model.
- The key goes in the ``X-Goog-Api-Key`` header (never in the URL, so never in a log line).
- Errors are ``{"error": {"code", "message", "status", "details": [ErrorInfo {"reason"}...]}}``:
  400 ``API_KEY_INVALID`` is a wrong key, 403 ``BILLING_DISABLED`` an account that cannot pay
  (the credit circuit opens, the fallback chain speaks), other 403s (``SERVICE_DISABLED``…) a
  key or project that is not allowed; 429 ``RESOURCE_EXHAUSTED`` may carry a ``RetryInfo``
  ``retryDelay`` ("30s"), and carries no ``Retry-After``.

Google bills by the character; a call's cost is its characters at :attr:`GoogleSettings.prices`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from bot.errors import (
    InsufficientCredits,
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    RateLimited,
    SynthesisFailed,
    UnknownVoice,
)
from bot.ops.config import LimitSettings, Settings
from bot.providers.base import (
    TYPICAL_CHARACTERS,
    KeptVoices,
    Provider,
    SynthesisJob,
    Synthesized,
    Usage,
    api_key,
    character_cost,
)
from bot.providers.http import ErrorResponse, HttpClient, StatusRule, status_error
from bot.providers.ratelimit import retry_after_s
from bot.speech import AudioChunk, AudioEncoding, Voice

__all__ = [
    "GOOGLE_STATUSES",
    "MAX_INPUT_BYTES",
    "GoogleOptions",
    "GoogleProvider",
    "GoogleSettings",
    "voice_type",
]

log = logging.getLogger(__name__)

API_KEY_ENV = "GOOGLE_API_KEY"
SYNTHESIZE_PATH = "/v1/text:synthesize"
VOICES_PATH = "/v1/voices"
#: Google's limit on one request's input, in UTF-8 bytes (quotas page: "Total bytes per request").
MAX_INPUT_BYTES = 5000
#: List prices in USD per million characters, by voice type, as Google's pricing page gave them
#: (2025); the monthly free characters are not counted. ``prices`` overrides them.
PRICES: dict[str, float] = {
    "Standard": 4.0,
    "Wavenet": 4.0,
    "Neural2": 16.0,
    "Polyglot": 16.0,
    "News": 16.0,
    "Casual": 16.0,
    "Chirp-HD": 30.0,
    "Chirp3-HD": 30.0,
    "Studio": 160.0,
}

AudioEncodingName = Literal["LINEAR16", "MP3", "OGG_OPUS"]
#: The sample rates Opus encodes (RFC 6716), so the only ones Google's OGG_OPUS can be asked for.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_ENCODINGS: dict[str, AudioEncoding] = {
    "LINEAR16": AudioEncoding.WAV,  # "For LINEAR16 audio, we include the WAV header"
    "MP3": AudioEncoding.MP3,
    "OGG_OPUS": AudioEncoding.OGG_OPUS,
}


#: Google's audio profiles (``effectsProfileId``, its "Audio profiles" page): speech tuned for
#: the device that plays it.
EffectsProfile = Literal[
    "wearable-class-device",
    "handset-class-device",
    "headphone-class-device",
    "small-bluetooth-speaker-class-device",
    "medium-bluetooth-speaker-class-device",
    "large-home-entertainment-class-device",
    "large-automotive-class-device",
    "telephony-class-application",
]


class GoogleSettings(BaseModel):
    """``providers.google`` in the configuration."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(
        None, description=f"A key allowed to call the Text-to-Speech API; else ${API_KEY_ENV}"
    )
    base_url: AnyHttpUrl = AnyHttpUrl("https://texttospeech.googleapis.com")
    default_voice: str = Field(
        "en-US-Standard-C", description="Voice used when a request names none"
    )
    audio_encoding: AudioEncodingName = Field(
        "LINEAR16", description="What Google sends: LINEAR16 (a WAV, lossless), MP3 or OGG_OPUS"
    )
    effects_profile: EffectsProfile | None = Field(
        None, description="Audio profile for every call (the effects_profile option wins)"
    )
    sample_rate_hertz: int | None = Field(
        None, ge=8000, le=48000, description="Asked sample rate; none: the voice's own"
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="USD per million characters by voice type (Standard, Neural2…), over "
        "Google's list prices",
    )
    voices_ttl_s: float = Field(
        3600, ge=0, description="How long the voice list is kept (seconds; 0: never)"
    )
    timeout_s: float = Field(60, gt=0, le=600, description="Limit for one call")

    @field_validator("sample_rate_hertz")
    @classmethod
    def _opus_rate(cls, rate: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("audio_encoding") == "OGG_OPUS" and rate not in (None, *OPUS_RATES):
            raise ValueError(f"OGG_OPUS takes {', '.join(map(str, OPUS_RATES))} Hz, not {rate}")
        return rate


class GoogleOptions(BaseModel):
    """Per-request options, in Google's ranges (``audioConfig``): ``speaking_rate`` 0.25 to 2
    (1 normal), ``pitch`` -20 to 20 semitones, ``volume_gain_db`` -96 to 16, ``effects_profile``
    (an audio profile, e.g. ``small-bluetooth-speaker-class-device`` for a smart speaker)."""

    model_config = ConfigDict(extra="forbid")

    effects_profile: EffectsProfile | None = None

    speaking_rate: float | None = Field(None, ge=0.25, le=2.0)
    pitch: float | None = Field(None, ge=-20, le=20)
    volume_gain_db: float | None = Field(None, ge=-96, le=16)
    audio_encoding: AudioEncodingName | None = None


def voice_type(name: str) -> str:
    """The type of a Google voice from its name: ``en-US-Neural2-J`` → ``Neural2``,
    ``en-US-Chirp3-HD-Kore`` → ``Chirp3-HD``; a name not of that shape is its own type."""
    parts = name.split("-")
    return "-".join(parts[2:-1]) if len(parts) >= 4 else name


def _error(body: bytes) -> tuple[str | None, float | None]:
    """The ``ErrorInfo`` reason and the ``RetryInfo`` delay (seconds) of a Google error body."""
    try:
        details = json.loads(body)["error"].get("details") or []
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None
    reason: str | None = None
    delay: float | None = None
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(detail.get("reason"), str):
            reason = detail["reason"]
        elif kind.endswith("google.rpc.RetryInfo"):
            delay = _duration_s(detail.get("retryDelay"))
    return reason, delay


def _duration_s(value: Any) -> float | None:
    """A protobuf Duration in JSON ("30s", "1.5s"), in seconds; None when unreadable."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def _bad_request(response: ErrorResponse) -> ProviderError:
    """A 400 is a wrong key when Google says ``API_KEY_INVALID``, else a refused parameter."""
    reason, _ = _error(response.body)
    cls = ProviderAuthError if reason == "API_KEY_INVALID" else ProviderRequestError
    return cls(response.provider, response.message, model=response.model, status=response.status)


def _forbidden(response: ErrorResponse) -> ProviderError:
    """A 403 ``BILLING_DISABLED`` is an account that cannot pay; the others, permission."""
    reason, _ = _error(response.body)
    if reason == "BILLING_DISABLED":
        return InsufficientCredits(
            response.provider, response.message, model=response.model, status=response.status
        )
    return status_error(response)


def _too_many_requests(response: ErrorResponse) -> ProviderError:
    """429: wait the ``RetryInfo`` delay when Google gives one, else any header's hint."""
    _, delay = _error(response.body)
    hint = delay if delay is not None else retry_after_s(response.headers)
    return RateLimited(
        response.provider, response.message, retry_after_s=hint, model=response.model
    )


#: Google's statuses, read with the error's ErrorInfo reason (google.rpc error model).
GOOGLE_STATUSES: Mapping[int, StatusRule] = {
    400: _bad_request,
    403: _forbidden,
    429: _too_many_requests,
}


class GoogleProvider(Provider):
    """Speech from Google Cloud Text-to-Speech. Raises :class:`bot.errors.ProviderError`
    subclasses; never sends or logs the key anywhere but its header."""

    kind = "google"
    settings_model = GoogleSettings
    paid = True
    #: Google's default quota: 1,000 requests a minute per project.
    default_limits = LimitSettings(requests_per_minute=1000, max_concurrent=8)

    def __init__(
        self, settings: GoogleSettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: GoogleSettings = settings
        self._api_key = api_key(settings.api_key, API_KEY_ENV)
        self.http = HttpClient(
            self.name,
            str(settings.base_url),
            {"X-Goog-Api-Key": self._api_key} if self._api_key else {},
            timeout_s=settings.timeout_s,
            statuses=GOOGLE_STATUSES,
        )
        self._voices = KeptVoices(settings.voices_ttl_s)

    def configuration_problem(self) -> str | None:
        if not self._api_key:
            return f"no API key: set {API_KEY_ENV} or providers.{self.name}.api_key"
        return None

    def _require_key(self, model: str | None) -> None:
        problem = self.configuration_problem()
        if problem:
            raise ProviderAuthError(self.name, problem, model=model)

    # -- voices ------------------------------------------------------------------------------
    async def list_voices(self) -> list[Voice]:
        """Every voice of ``GET /v1/voices``, kept ``voices_ttl_s``; the model is the voice's
        type (``Neural2``), the language its first code (``en_US``)."""
        self._require_key(None)
        return await self._voices.get(self._fetch_voices)

    async def _fetch_voices(self) -> list[Voice]:
        async with self.http.request("GET", VOICES_PATH, model=None) as response:
            raw = await response.read()
        try:
            listed = json.loads(raw)["voices"]
            voices = [_voice(self.name, str(v["name"]), list(v["languageCodes"])) for v in listed]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ProviderError(self.name, "the voice list cannot be read") from None
        log.debug("%s: %d voices", self.name, len(voices))
        return voices

    def default_voice_id(self) -> str:
        return self.settings.default_voice

    async def resolve_voice(self, voice: str | None, model: str | None) -> Voice:
        """As :meth:`Provider.resolve_voice`; an unknown name lists the voices of its language
        first (Google has hundreds)."""
        try:
            return await super().resolve_voice(voice, model)
        except UnknownVoice:
            wanted = voice or self.default_voice_id()
            language = _language(wanted).casefold()
            ids = [v.id for v in await self.list_voices() if model in (None, v.model)]
            near = [i for i in ids if i.casefold().startswith(language)]
            raise UnknownVoice(wanted, near or ids, self.name) from None

    def rate_options(self, voice: Voice, speed: float) -> dict[str, Any]:  # noqa: ARG002 - Provider.rate_options: one rate for all
        """``speakingRate`` (1.0 normal)."""
        return {"speaking_rate": speed}

    def options_model(self, voice: Voice) -> type[BaseModel]:  # noqa: ARG002 - Provider.options_model: one model for all
        return GoogleOptions

    def price(self, voice: Voice) -> float | None:
        """USD per million characters of ``voice``'s type, or None when unknown."""
        return self.settings.prices.get(voice.model, PRICES.get(voice.model))

    def estimated_cost(self, voice: Voice) -> float | None:
        return character_cost(self.price(voice), TYPICAL_CHARACTERS)

    # -- synthesis ---------------------------------------------------------------------------
    def _payload(self, job: SynthesisJob, encoding: str) -> dict[str, Any]:
        """The documented fields only. Raises :class:`InvalidRequest` for over-long input."""
        size = len(job.text.encode())
        if size > MAX_INPUT_BYTES:
            raise InvalidRequest(
                f"text is too long for {self.name}: {size} bytes, Google takes at most "
                f"{MAX_INPUT_BYTES} per call"
            )
        options = GoogleOptions.model_validate(dict(job.options))
        config: dict[str, Any] = {"audioEncoding": encoding}
        profile = options.effects_profile or self.settings.effects_profile
        if profile is not None:
            config["effectsProfileId"] = [profile]
        for field, value in (
            ("speakingRate", options.speaking_rate),
            ("pitch", options.pitch),
            ("volumeGainDb", options.volume_gain_db),
            ("sampleRateHertz", self.settings.sample_rate_hertz),
        ):
            if value is not None:
                config[field] = value
        language = job.voice.language.replace("_", "-") if job.voice.language else None
        return {
            "input": {"text": job.text},
            "voice": {"languageCode": language or _language(job.voice.id), "name": job.voice.id},
            "audioConfig": config,
        }

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        """The whole utterance, as ``audio_encoding`` (LINEAR16: a WAV file), and what it cost:
        its characters at the voice type's price."""
        encoding = str(job.options.get("audio_encoding") or self.settings.audio_encoding)
        payload = self._payload(job, encoding)
        self._require_key(job.voice.model)
        async with self.http.request(
            "POST", SYNTHESIZE_PATH, model=job.voice.model, json_body=payload
        ) as response:
            raw = await response.read()
        try:
            audio = base64.b64decode(json.loads(raw)["audioContent"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SynthesisFailed(
                self.name, "the response holds no readable audioContent", model=job.voice.model
            ) from None
        if not audio:
            raise SynthesisFailed(self.name, "the response holds no audio", model=job.voice.model)
        cost = character_cost(self.price(job.voice), len(job.text))
        return Synthesized(AudioChunk(audio, _ENCODINGS[encoding], 0, 0), Usage(cost_usd=cost))

    async def aclose(self) -> None:
        await self.http.aclose()


def _language(name: str) -> str:
    """``en-US`` of ``en-US-Neural2-J``."""
    return "-".join(name.split("-")[:2])


def _voice(provider: str, name: str, languages: list[str]) -> Voice:
    language = str(languages[0]) if languages else _language(name)
    return Voice(provider, voice_type(name), name, name, language.replace("-", "_"))
