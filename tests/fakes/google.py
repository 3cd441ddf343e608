"""A fake Google Cloud Text-to-Speech REST API, v1 (``https://texttospeech.googleapis.com``).

- Auth: an API key in the ``X-Goog-Api-Key`` header or the ``key`` query parameter (the header
  wins when both are sent). No key → 403 ``PERMISSION_DENIED`` (reason ``CREDENTIALS_MISSING``);
  a wrong key → 400 ``INVALID_ARGUMENT`` (reason ``API_KEY_INVALID``). OAuth is not simulated.
- ``GET /v1/voices`` (optional ``languageCode``, a BCP-47 tag matching the voices with that code
  or a code under it: ``en`` matches ``en-US``) → ``{"voices": [{"languageCodes", "name",
  "ssmlGender", "naturalSampleRateHertz"}]}``; ``{}`` when none match (proto3 JSON omits an
  empty repeated field).
- ``POST /v1/text:synthesize``: ``input`` (``text`` or ``ssml``, at most 5000 bytes of UTF-8),
  ``voice`` (``languageCode`` required; ``name``; ``ssmlGender``, only a preference: another
  gender of the language is substituted rather than failing), ``audioConfig``
  (``audioEncoding`` required; ``speakingRate`` [0.25, 2.0]; ``pitch`` [-20, 20]; ``volumeGainDb``
  [-96, 16]; ``sampleRateHertz``, default the voice's natural rate) → ``{"audioContent": base64}``.
  LINEAR16, MULAW and ALAW carry a WAV header, PCM is headerless s16le, MP3 is 32 kbit/s
  (MP3_64_KBPS 64 kbit/s), OGG_OPUS is Ogg Opus (default 48 kHz; Opus rates only). Other rates:
  MP3 takes LAME's, the rest 8000 to 48000 Hz (the fake's bounds: Google documents none).

Proto3 JSON rules apply: field names in lowerCamelCase or snake_case, enums by name or number
(``$alt=json;enum-encoding=int``, as Google's client libraries send, also answers enums as
numbers), ``null`` or a zero value meaning unset, an unknown field name refused. Every error body
is Google's error model, :func:`google_error`; validation errors have no ``details``. Limits: 1000
requests per minute per project (sliding window, both routes); a 429 has no ``Retry-After``.

Billing is per character of the input as sent (SSML tags included: "SSML characters count toward
character limits"). Not simulated: ``pitch`` (validated, no effect), ``effectsProfileId``
(accepted, ignored), M4A output, ``input.markup`` / ``multiSpeakerMarkup`` / ``prompt`` /
``customPronunciations``, custom and cloned voices, ``advancedVoiceOptions`` (each a 400 naming
the field); SSML is not validated (its tags are stripped to get the spoken text).

Over 450 lines: the proto3 JSON rules, every documented field's check and error, in one place.
"""

from __future__ import annotations

import base64
import html
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from aiohttp import web

from tests.fakes.audio import (
    Synthesizer,
    encode_pcm,
    encode_with_ffmpeg,
    resample,
    run_synthesizer,
    wav_bytes,
)
from tests.fakes.base import (
    REDACTED,
    BilledCall,
    Clock,
    FakeServer,
    LoggedRequest,
    RateLimiter,
    ScriptedResponse,
)

__all__ = [
    "API_KEY_INVALID_MESSAGE",
    "BILLING_DISABLED_MESSAGE",
    "CREDENTIALS_MISSING_MESSAGE",
    "DEFAULT_API_KEY",
    "DEFAULT_RATE_LIMIT",
    "ENCODINGS",
    "GENDERS",
    "INPUT_TOO_LONG_MESSAGE",
    "MAX_INPUT_BYTES",
    "MP3_RATES",
    "OPUS_DEFAULT_RATE",
    "OPUS_RATES",
    "PROJECT_NUMBER",
    "RATE_LIMIT_MESSAGE",
    "SERVICE",
    "SERVICE_DISABLED_MESSAGE",
    "SYNTHESIZE_PATH",
    "UNAVAILABLE_MESSAGE",
    "VOICES",
    "VOICES_PATH",
    "FakeGoogleTTS",
    "GoogleVoice",
    "encode_google",
    "g711_wav",
    "google_error",
    "parse_synthesize_request",
]

DEFAULT_API_KEY = "test-google-key"
DEFAULT_RATE_LIMIT = 1000  # "Requests per minute: 1,000" (quotas page)
PROJECT_NUMBER = "123456"
SERVICE = "texttospeech.googleapis.com"
SYNTHESIZE_PATH = "/v1/text:synthesize"
VOICES_PATH = "/v1/voices"
MAX_INPUT_BYTES = 5000

# Enum names by number, as in ``cloud_tts.proto``.
ENCODINGS: dict[str, int] = {
    name: number
    for number, name in enumerate(
        ("AUDIO_ENCODING_UNSPECIFIED", "LINEAR16", "MP3", "OGG_OPUS", "MP3_64_KBPS", "MULAW")
        + ("ALAW", "PCM", "M4A")
    )
}
GENDERS: dict[str, int] = {
    name: number
    for number, name in enumerate(("SSML_VOICE_GENDER_UNSPECIFIED", "MALE", "FEMALE", "NEUTRAL"))
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_DEFAULT_RATE = 48_000
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what LAME takes
PCM_RATES = range(8000, 48001)  # the fake's own bounds: Google documents none
MP3_BIT_RATES = {"MP3": 32_000, "MP3_64_KBPS": 64_000}  # "MP3 audio at 32kbps"
OPUS_BIT_RATE = 32_000  # "approximately the same bitrate" as MP3

INPUT_TOO_LONG_MESSAGE = (
    "Either `input.text` or `input.ssml` is longer than the limit of 5000 bytes. This limit is "
    "different from quotas. To fix, reduce the byte length of the characters in this request, or "
    "consider using the Long Audio API: "
    "https://cloud.google.com/text-to-speech/docs/create-audio-text-long-audio-synthesis."
)
CREDENTIALS_MISSING_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). Please "
    "use API Key or other form of API consumer identity to call this API."
)
API_KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."
RATE_LIMIT_MESSAGE = (
    "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service "
    f"'{SERVICE}' for consumer 'project_number:{PROJECT_NUMBER}'."
)
BILLING_DISABLED_MESSAGE = (
    f"This API method requires billing to be enabled. Please enable billing on project "
    f"#{PROJECT_NUMBER} by visiting "
    f"https://console.developers.google.com/billing/enable?project={PROJECT_NUMBER} then retry. "
    "If you enabled billing for this project recently, wait a few minutes for the action to "
    "propagate to our systems and retry."
)
SERVICE_DISABLED_MESSAGE = (
    f"Cloud Text-to-Speech API has not been used in project {PROJECT_NUMBER} before or it is "
    "disabled. Enable it by visiting https://console.developers.google.com/apis/api/"
    f"{SERVICE}/overview?project={PROJECT_NUMBER} then retry."
)
UNAVAILABLE_MESSAGE = "The service is currently unavailable."

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_TAG = re.compile(r"<[^>]*>")
_SNAKE = re.compile(r"_([a-z0-9])")

# Each message's fields: those the fake reads, then those Google knows and the fake does not.
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "request": (frozenset({"input", "voice", "audioConfig"}), frozenset({"advancedVoiceOptions"})),
    "input": (
        frozenset({"text", "ssml"}),
        frozenset({"markup", "multiSpeakerMarkup", "prompt", "customPronunciations"}),
    ),
    "voice": (
        frozenset({"languageCode", "name", "ssmlGender"}),
        frozenset({"customVoice", "voiceClone", "modelName", "multiSpeakerVoiceConfig"}),
    ),
    "audio_config": (
        frozenset({"audioEncoding", "speakingRate", "pitch", "volumeGainDb", "sampleRateHertz"})
        | {"effectsProfileId"},
        frozenset(),
    ),
}
_TYPES = {
    "input": "type.googleapis.com/google.cloud.texttospeech.v1.SynthesisInput",
    "voice": "type.googleapis.com/google.cloud.texttospeech.v1.VoiceSelectionParams",
    "audio_config": "type.googleapis.com/google.cloud.texttospeech.v1.AudioConfig",
}


@dataclass(frozen=True)
class GoogleVoice:
    """One entry of ``voices.list``."""

    name: str
    language_codes: tuple[str, ...]
    ssml_gender: str
    natural_sample_rate_hertz: int = 24_000

    def to_json(self, int_enums: bool = False) -> dict[str, Any]:
        gender: str | int = GENDERS[self.ssml_gender] if int_enums else self.ssml_gender
        return {
            "languageCodes": list(self.language_codes),
            "name": self.name,
            "ssmlGender": gender,
            "naturalSampleRateHertz": self.natural_sample_rate_hertz,
        }

    def speaks(self, language_code: str) -> bool:
        """Whether one of the voice's codes is ``language_code`` (BCP-47: case-insensitive)."""
        return language_code.lower() in (code.lower() for code in self.language_codes)

    def listed_for(self, language_code: str) -> bool:
        """``voices.list`` filter: a code equal to ``language_code`` or under it."""
        wanted = language_code.lower()
        return any(
            code.lower() == wanted or code.lower().startswith(f"{wanted}-")
            for code in self.language_codes
        )


VOICES: tuple[GoogleVoice, ...] = (
    GoogleVoice("en-US-Standard-C", ("en-US",), "FEMALE"),
    GoogleVoice("en-US-Standard-D", ("en-US",), "MALE"),
    GoogleVoice("en-US-Wavenet-F", ("en-US",), "FEMALE"),
    GoogleVoice("en-US-Neural2-J", ("en-US",), "MALE"),
    GoogleVoice("en-US-Chirp3-HD-Kore", ("en-US",), "FEMALE"),
    GoogleVoice("en-US-Studio-O", ("en-US",), "FEMALE"),
    GoogleVoice("en-GB-Neural2-B", ("en-GB",), "MALE"),
    GoogleVoice("de-DE-Standard-A", ("de-DE",), "FEMALE", 22_050),
    GoogleVoice("fr-FR-Wavenet-C", ("fr-FR",), "FEMALE"),
)
_BY_NAME = {voice.name: voice for voice in VOICES}


def _duration(seconds: float) -> str:
    """A ``google.protobuf.Duration`` in JSON: seconds, 0/3/6/9 fractional digits, ``s``."""
    whole, nanos = divmod(round(seconds * 1_000_000_000), 1_000_000_000)
    if nanos == 0:
        return f"{whole}s"
    digits = 3 if nanos % 1_000_000 == 0 else 6 if nanos % 1000 == 0 else 9
    return f"{whole}.{nanos:09d}"[: len(str(whole)) + 1 + digits] + "s"


def google_error(
    status: int,
    canonical: str,
    message: str,
    reason: str | None = None,
    retry_delay_s: float | None = None,
) -> dict[str, Any]:
    """Google's error model: ``{"error": {"code", "message", "status", "details"?}}``.

    ``reason`` adds a ``google.rpc.ErrorInfo`` detail, ``retry_delay_s`` a ``google.rpc.RetryInfo``
    (its ``retryDelay`` a Duration, e.g. ``"30s"``); with neither, there is no ``details``.
    """
    error: dict[str, Any] = {"code": status, "message": message, "status": canonical}
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append(
            {
                "@type": _ERROR_INFO,
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE},
            }
        )
    if retry_delay_s is not None:
        details.append({"@type": _RETRY_INFO, "retryDelay": _duration(retry_delay_s)})
    if details:
        error["details"] = details
    return {"error": error}


def _error(status: int, canonical: str, message: str, reason: str | None = None) -> web.Response:
    return web.json_response(google_error(status, canonical, message, reason), status=status)


def _invalid(message: str) -> web.Response:
    return _error(400, "INVALID_ARGUMENT", message)


def _camel(name: str) -> str:
    return _SNAKE.sub(lambda found: found.group(1).upper(), name)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda found: f"_{found.group(1).lower()}", name)


def _invalid_value(where: str, kind: str, value: Any) -> str:
    return f"Invalid value at '{where}' ({kind}), {json.dumps(value)}"


def _message(value: Any, where: str) -> dict[str, Any] | str:
    """A message's fields by lowerCamelCase name, nulls dropped; or what is wrong with it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return _invalid_value(where, _TYPES.get(where, "object"), value)
    read, unsimulated = _FIELDS[where]
    fields: dict[str, Any] = {}
    for name, item in value.items():
        key = _camel(name)
        if key not in read | unsimulated:
            at = "" if where == "request" else f" at '{where}'"
            return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
        if item is None:
            continue
        if key in unsimulated:
            path = "" if where == "request" else f"{_camel(where)}."
            return f"`{path}{key}` is not supported by this fake."
        fields[key] = item
    return fields


def _number(value: Any, where: str) -> float | str:
    """A proto3 JSON double (a number or a numeric string); or what is wrong with it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return _invalid_value(where, "TYPE_DOUBLE", value)


def _integer(value: Any, where: str) -> int | str:
    """A proto3 JSON int32 (an integral number or a numeric string); or what is wrong with it."""
    number = _number(value, where)
    if isinstance(number, str) or not number.is_integer():
        return _invalid_value(where, "TYPE_INT32", value)
    return int(number)


def _enum(value: Any, names: Mapping[str, int]) -> str | None:
    """An enum's name, from its name or number; None when ``value`` is neither."""
    if isinstance(value, str) and value in names:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        for name, number in names.items():
            if number == value:
                return name
    return None


@dataclass(frozen=True)
class _Synthesis:
    text: str  # what is spoken (SSML without its tags)
    billed_text: str  # the input as sent
    voice: GoogleVoice
    encoding: str
    sample_rate: int
    speaking_rate: float
    volume_gain_db: float


def _parse_input(value: Any) -> tuple[str, str] | str:
    """(spoken text, input as sent) from ``input``; or what is wrong with it."""
    fields = _message(value, "input")
    if isinstance(fields, str):
        return fields
    if "text" in fields and "ssml" in fields:
        return "`input.text` and `input.ssml` are mutually exclusive: set only one of them."
    kind = "ssml" if "ssml" in fields else "text"
    raw = fields.get(kind, "")
    if not isinstance(raw, str):
        return _invalid_value(f"input.{kind}", "TYPE_STRING", raw)
    if not raw.strip():
        return "Either `input.text` or `input.ssml` must be set to a non-empty value."
    if len(raw.encode("utf-8")) > MAX_INPUT_BYTES:
        return INPUT_TOO_LONG_MESSAGE
    spoken = " ".join(html.unescape(_TAG.sub(" ", raw)).split()) if kind == "ssml" else raw
    return spoken, raw


def _pick_voice(language: str, gender: str | None) -> GoogleVoice | str:
    speaking = [voice for voice in VOICES if voice.speaks(language)]
    if not speaking:
        return f"Voice does not exist for language code '{language}'."
    preferred = [voice for voice in speaking if voice.ssml_gender == gender]
    return (preferred or speaking)[0]  # the gender is "only a preference, not requirement"


def _parse_voice(value: Any) -> GoogleVoice | str:
    fields = _message(value, "voice")
    if isinstance(fields, str):
        return fields
    for name in ("languageCode", "name"):
        if not isinstance(fields.get(name, ""), str):
            return _invalid_value(f"voice.{_snake(name)}", "TYPE_STRING", fields[name])
    language = fields.get("languageCode", "")
    if not language:
        return "`voice.languageCode` is required."
    gender = _enum(fields.get("ssmlGender", 0), GENDERS)
    if gender is None:
        kind = "type.googleapis.com/google.cloud.texttospeech.v1.SsmlVoiceGender"
        return _invalid_value("voice.ssml_gender", kind, fields["ssmlGender"])
    name = fields.get("name", "")
    if not name:
        return _pick_voice(language, None if gender.endswith("UNSPECIFIED") else gender)
    voice = _BY_NAME.get(name)
    if voice is None:
        return f"Voice '{name}' does not exist. Is it misspelled?"
    if not voice.speaks(language):
        return (
            f"Requested language code '{language}' doesn't match the voice '{name}''s language "
            f"code '{voice.language_codes[0]}'. Either remove language code or set it to the "
            "voice's language code."
        )
    return voice


@dataclass(frozen=True)
class _AudioConfig:
    encoding: str
    speaking_rate: float
    volume_gain_db: float
    sample_rate: int  # 0: the voice's natural rate


_RANGES: dict[str, tuple[float, float]] = {
    "speakingRate": (0.25, 2.0),
    "pitch": (-20.0, 20.0),
    "volumeGainDb": (-96.0, 16.0),
}


def _parse_audio_config(value: Any) -> _AudioConfig | str:
    fields = _message(value, "audio_config")
    if isinstance(fields, str):
        return fields
    raw = fields.get("audioEncoding", 0)
    encoding = _enum(raw, ENCODINGS)
    if encoding is None:
        kind = "type.googleapis.com/google.cloud.texttospeech.v1.AudioEncoding"
        return _invalid_value("audio_config.audio_encoding", kind, raw)
    if encoding == "AUDIO_ENCODING_UNSPECIFIED":
        return "`audioConfig.audioEncoding` is required (AUDIO_ENCODING_UNSPECIFIED is unset)."
    if encoding == "M4A":
        return "`audioConfig.audioEncoding` M4A is not supported by this fake."
    numbers: dict[str, float] = {}
    for name, (low, high) in _RANGES.items():
        number = _number(fields.get(name, 0.0), f"audio_config.{_snake(name)}")
        if isinstance(number, str):
            return number
        if number != 0.0 and not low <= number <= high:  # 0.0 is unset
            return f"`audioConfig.{name}` must be in the range [{low}, {high}], got {number:g}."
        numbers[name] = number
    rate = _integer(fields.get("sampleRateHertz", 0), "audio_config.sample_rate_hertz")
    if isinstance(rate, str):
        return rate
    return _AudioConfig(encoding, numbers["speakingRate"] or 1.0, numbers["volumeGainDb"], rate)


def _output_rate(voice: GoogleVoice, config: _AudioConfig) -> int | str:
    """The rate of the audio sent back; or why the requested one cannot be had."""
    opus = config.encoding == "OGG_OPUS"
    if config.sample_rate == 0:
        return OPUS_DEFAULT_RATE if opus else voice.natural_sample_rate_hertz
    allowed: tuple[int, ...] | range = (
        OPUS_RATES if opus else MP3_RATES if config.encoding in MP3_BIT_RATES else PCM_RATES
    )
    if config.sample_rate in allowed:
        return config.sample_rate
    options = (
        ", ".join(map(str, allowed))
        if isinstance(allowed, tuple)
        else f"{allowed.start} to {allowed.stop - 1}"
    )
    return (
        f"`audioConfig.sampleRateHertz` {config.sample_rate} is not supported for "
        f"{config.encoding}; use one of: {options}."
    )


def parse_synthesize_request(body: Any) -> _Synthesis | str:
    """Validate a ``text:synthesize`` body; the 400 message when it is invalid."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object for the request body."
    fields = _message(body, "request")
    if isinstance(fields, str):
        return fields
    source = _parse_input(fields.get("input"))
    if isinstance(source, str):
        return source
    voice = _parse_voice(fields.get("voice"))
    if isinstance(voice, str):
        return voice
    config = _parse_audio_config(fields.get("audioConfig"))
    if isinstance(config, str):
        return config
    rate = _output_rate(voice, config)
    if isinstance(rate, str):
        return rate
    text, billed = source
    return _Synthesis(
        text, billed, voice, config.encoding, rate, config.speaking_rate, config.volume_gain_db
    )


def g711_wav(data: bytes, rate: int, format_tag: int) -> bytes:
    """A RIFF/WAVE file of 8-bit G.711 mono (``format_tag`` 7: mu-law, 6: A-law)."""
    fmt = struct.pack("<HHIIHHH", format_tag, 1, rate, rate, 1, 8, 0)
    chunks = b"".join(
        (
            b"WAVE",
            b"fmt " + struct.pack("<I", len(fmt)) + fmt,
            b"fact" + struct.pack("<II", 4, len(data)),
            b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b""),
        )
    )
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


def _gain(pcm: bytes, decibels: float) -> bytes:
    if decibels == 0.0 or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    scaled = np.clip(np.round(samples * 10 ** (decibels / 20)), -32768, 32767)
    return scaled.astype("<i2").tobytes()


async def encode_google(pcm: bytes, rate: int, encoding: str) -> bytes:
    """s16le mono at ``rate`` as Google sends it for ``encoding``."""
    if encoding == "LINEAR16":
        return wav_bytes(pcm, rate)  # "For LINEAR16 audio, we include the WAV header"
    if encoding == "PCM":
        return pcm
    if encoding == "MULAW":
        return g711_wav(encode_pcm(pcm, "pcm_mulaw"), rate, 7)
    if encoding == "ALAW":
        return g711_wav(encode_pcm(pcm, "pcm_alaw"), rate, 6)
    if encoding == "OGG_OPUS":
        return await encode_with_ffmpeg(pcm, rate, "opus", bit_rate=OPUS_BIT_RATE)
    return await encode_with_ffmpeg(pcm, rate, "mp3", bit_rate=MP3_BIT_RATES[encoding])


class FakeGoogleTTS(FakeServer):
    """Simulated Google Cloud Text-to-Speech v1: ``voices.list`` and ``text:synthesize``.

    Args:
        api_key: the one valid API key (``X-Goog-Api-Key`` header or ``key`` query parameter).
        rate_limit_per_minute: sliding-window requests per minute (Google's default, 1000).
        synthesizer, clock: see :class:`~tests.fakes.base.FakeServer`.

    ``characters_billed`` sums the characters of every synthesized input.
    """

    secret_headers: ClassVar[frozenset[str]] = FakeServer.secret_headers | {"x-goog-api-key"}
    secret_query: ClassVar[frozenset[str]] = frozenset({"key"})

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        rate_limit_per_minute: int = DEFAULT_RATE_LIMIT,
        synthesizer: Synthesizer | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(synthesizer=synthesizer, clock=clock)
        self.api_key = api_key
        self.limiter = RateLimiter(rate_limit_per_minute, self.clock)
        self.characters_billed = 0

    # -- public helpers for tests ---------------------------------------------------------------
    def inject_error(
        self,
        status: int,
        canonical: str,
        message: str,
        *,
        reason: str | None = None,
        retry_delay_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
        path: str = SYNTHESIZE_PATH,
        method: str = "POST",
    ) -> None:
        """Script ``count`` Google-shaped errors for ``method path`` (see :func:`google_error`)."""
        body = google_error(status, canonical, message, reason, retry_delay_s)
        self.script(method, path, *([ScriptedResponse(status, body, headers or {})] * count))

    def inject_rate_limit(self, count: int = 1, retry_delay_s: float | None = None) -> None:
        """The next ``count`` syntheses get 429 ``RESOURCE_EXHAUSTED`` (no ``Retry-After``)."""
        self.inject_error(
            429,
            "RESOURCE_EXHAUSTED",
            RATE_LIMIT_MESSAGE,
            reason="RATE_LIMIT_EXCEEDED",
            retry_delay_s=retry_delay_s,
            count=count,
        )

    def inject_billing_disabled(self, count: int = 1) -> None:
        """The next ``count`` syntheses get 403 ``PERMISSION_DENIED`` (``BILLING_DISABLED``)."""
        self.inject_error(
            403,
            "PERMISSION_DENIED",
            BILLING_DISABLED_MESSAGE,
            reason="BILLING_DISABLED",
            count=count,
        )

    def inject_service_disabled(self, count: int = 1) -> None:
        """The next ``count`` syntheses get 403 ``PERMISSION_DENIED`` (``SERVICE_DISABLED``)."""
        self.inject_error(
            403,
            "PERMISSION_DENIED",
            SERVICE_DISABLED_MESSAGE,
            reason="SERVICE_DISABLED",
            count=count,
        )

    def inject_unavailable(self, count: int = 1) -> None:
        """The next ``count`` syntheses get 503 ``UNAVAILABLE`` (a transient backend failure)."""
        self.inject_error(503, "UNAVAILABLE", UNAVAILABLE_MESSAGE, count=count)

    # -- routes -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(VOICES_PATH, self._voices)
        app.router.add_post(SYNTHESIZE_PATH, self._synthesize)

    def _log_entry(self, request: web.Request, body: bytes) -> LoggedRequest:
        entry = super()._log_entry(request, body)
        hidden = self.secret_query & entry.query.keys()
        if not hidden:
            return entry
        return replace(entry, query={**entry.query, **dict.fromkeys(hidden, REDACTED)})

    def _admit(self, request: web.Request) -> web.Response | None:
        """Auth, then the per-minute quota: the error response, or None to go on."""
        key = request.headers.get("X-Goog-Api-Key") or request.query.get("key")
        if not key:
            return _error(
                403, "PERMISSION_DENIED", CREDENTIALS_MISSING_MESSAGE, "CREDENTIALS_MISSING"
            )
        if key != self.api_key:
            return _error(400, "INVALID_ARGUMENT", API_KEY_INVALID_MESSAGE, "API_KEY_INVALID")
        if not self.limiter.acquire():
            return _error(429, "RESOURCE_EXHAUSTED", RATE_LIMIT_MESSAGE, "RATE_LIMIT_EXCEEDED")
        return None

    @staticmethod
    def _int_enums(request: web.Request) -> bool:
        return "enum-encoding=int" in request.query.get("$alt", "")

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        refused = self._admit(request)
        if refused is not None:
            return refused
        wanted = request.query.get("languageCode", request.query.get("language_code", ""))
        voices = [
            voice.to_json(self._int_enums(request))
            for voice in VOICES
            if not wanted or voice.listed_for(wanted)
        ]
        return web.json_response({"voices": voices} if voices else {})

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        refused = self._admit(request)
        if refused is not None:
            return refused
        try:
            raw: Any = json.loads(await request.read())
        except ValueError:
            return _invalid("Invalid JSON payload received. Unexpected token.")
        parsed = parse_synthesize_request(raw)
        if isinstance(parsed, str):
            return _invalid(parsed)
        pcm, rate = await run_synthesizer(self.synthesizer, parsed.text)
        if parsed.speaking_rate != 1.0:  # faster speech: fewer samples at the same rate
            pcm = resample(pcm, rate, round(rate / parsed.speaking_rate))
        pcm = _gain(resample(pcm, rate, parsed.sample_rate), parsed.volume_gain_db)
        audio = await encode_google(pcm, parsed.sample_rate, parsed.encoding)
        self.billed.append(BilledCall(parsed.voice.name, parsed.billed_text))
        self.characters_billed += len(parsed.billed_text)
        return web.json_response({"audioContent": base64.b64encode(audio).decode()})
