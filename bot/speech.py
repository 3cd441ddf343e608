"""The shapes every part of Oyez speaks in.

A source builds a :class:`SpeechRequest`; the pipeline resolves it to a :class:`Voice` and a
provider, which makes :class:`AudioChunk` s; the transcoder turns them into an
:class:`Utterance` in the :class:`OutputProfile` a sink plays. ``SpeechRequest`` is pydantic (it
comes from the edges: slash options, event data, HTTP bodies); the rest are frozen dataclasses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.errors import InvalidRequest, validation_problems

__all__ = [
    "AudioChunk",
    "AudioEncoding",
    "FallbackNote",
    "FileType",
    "OutputProfile",
    "Priority",
    "RequestSource",
    "SpeechRequest",
    "Timings",
    "Utterance",
    "Voice",
]


class OutputProfile(StrEnum):
    """What a sink needs, by value; codec, rate and bitrate live in :mod:`bot.audio.transcode`.

    - ``discord`` (``OGG_OPUS``): Ogg Opus, 48 kHz, stereo, 20 ms frames, as Discord voice plays.
    - ``mp3``: MP3 for smart speakers at the voice's own rate where MP3 has it, else 44.1 kHz
      (``audio.mp3_sample_rate``), mono (``audio.mp3_channels``), >= 128 kbit/s.
    - ``wav``: PCM s16le in a WAV container, mono, at the voice's own rate (Piper's 22.05 kHz…;
      48 kHz for audio only ffmpeg decodes).
    """

    OGG_OPUS = "discord"  # the value is what config, --format and cache keys say
    MP3 = "mp3"
    WAV = "wav"

    @property
    def file_type(self) -> FileType:
        return _FILE_TYPES[self]

    @property
    def extension(self) -> str:
        """The file extension, with its dot (``.ogg``)."""
        return self.file_type.extension

    @property
    def mime_type(self) -> str:
        return self.file_type.mime_type

    @classmethod
    def for_path(cls, suffix: str) -> OutputProfile | None:
        """The profile a file extension implies (``.ogg``/``.opus`` → discord), else None."""
        suffix = suffix.lower()
        for profile, file_type in _FILE_TYPES.items():
            if suffix in (file_type.extension, *file_type.also_read_as):
                return profile
        return None


@dataclass(frozen=True, slots=True)
class FileType:
    """How a profile's audio is named and served: its extension (``.ogg``), the other extensions
    that mean it, its MIME type and what people call the format."""

    extension: str
    mime_type: str
    description: str
    also_read_as: tuple[str, ...] = ()


_FILE_TYPES = {
    OutputProfile.OGG_OPUS: FileType(".ogg", "audio/ogg", "Ogg Opus", (".opus",)),
    OutputProfile.MP3: FileType(".mp3", "audio/mpeg", "MP3"),
    OutputProfile.WAV: FileType(".wav", "audio/wav", "WAV PCM s16le"),
}


class Priority(StrEnum):
    """Queue order and quiet-hours policy: ``high`` jumps queues and passes quiet hours."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {"low": 0, "normal": 1, "high": 2}[self.value]


class RequestSource(StrEnum):
    CLI = "cli"
    DISCORD = "discord"
    HOMEASSISTANT = "homeassistant"
    SCHEDULE = "schedule"
    HTTP = "http"
    WYOMING = "wyoming"


OptionValue = str | int | float | bool | None


class SpeechRequest(BaseModel):
    """One thing to say, from any source.

    ``provider``, ``model`` and ``voice`` default from the configuration; ``options`` are the
    provider's (Piper's ``length_scale``), validated before synthesis; ``speed`` (0.5 to 2, 1
    normal) is a speaking rate for whichever provider speaks, ignored by one without a rate
    option (:meth:`~bot.providers.base.Provider.rate_options`); options given win. Past
    ``expires_at`` (UTC) a request is dropped (:class:`bot.errors.RequestExpired`), never
    spoken late. ``requester`` and ``guild`` (a Discord server id) are who asked. ``fallback``
    off: a provider that cannot speak is an error, not a turn for the fallback chain; ``cache``
    off: no cache read or write.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    text: str
    provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    model: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    voice: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    options: dict[str, OptionValue] = Field(default_factory=dict)
    speed: float | None = Field(None, ge=0.5, le=2.0)
    output: OutputProfile = OutputProfile.OGG_OPUS
    source: RequestSource = RequestSource.CLI
    requester: str | None = None
    guild: str | None = None
    priority: Priority = Priority.NORMAL
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    expires_at: datetime | None = None
    fallback: bool = True
    cache: bool = True

    @field_validator("created_at", "expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone (UTC is safest)")
        return value

    @classmethod
    def build(cls, **fields: Any) -> SpeechRequest:
        """Validate ``fields`` from an edge; raises :class:`InvalidRequest` naming each bad one."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = validation_problems(exc, "request")
            raise InvalidRequest("invalid request: " + "; ".join(problems)) from None

    def overdue_s(self, now: datetime | None = None) -> float:
        """Seconds past expiry (> 0 means expired); ``-inf`` when the request never expires."""
        if self.expires_at is None:
            return float("-inf")
        return ((now or datetime.now(UTC)) - self.expires_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice a provider can speak with.

    ``id`` is what the provider's API takes; ``model`` the provider model that speaks it
    (for Piper each voice is its own model); ``language`` a BCP 47-ish tag such as ``en_US``.
    """

    provider: str
    model: str
    id: str
    name: str
    language: str | None = None

    @property
    def label(self) -> str:
        """``provider/model/id``: how logs and replies name it."""
        if self.model == self.id:
            return f"{self.provider}/{self.id}"
        return f"{self.provider}/{self.model}/{self.id}"

    def matches(self, wanted: str) -> bool:
        """Whether ``wanted`` (any case; empty: anything) is in the voice's id, name, provider,
        model or language: how ``oyez voices --search``, ``/voices search:`` and Discord's
        autocomplete find voices."""
        text = f"{self.id} {self.name} {self.provider} {self.model} {self.language or ''}"
        return wanted.casefold().strip() in text.casefold()


class AudioEncoding(StrEnum):
    """How audio bytes are encoded. PCM kinds are headerless and need sample rate and channels."""

    PCM_S16LE = "pcm_s16le"
    PCM_F32LE = "pcm_f32le"
    PCM_MULAW = "pcm_mulaw"
    PCM_ALAW = "pcm_alaw"
    WAV = "wav"
    MP3 = "mp3"
    OGG_OPUS = "ogg_opus"
    FLAC = "flac"
    AAC = "aac"

    @property
    def is_raw_pcm(self) -> bool:
        return self.value.startswith("pcm_")


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of audio as a provider delivers it.

    For raw PCM encodings ``sample_rate`` (Hz) and ``channels`` are required; for containers
    (WAV, MP3, Ogg…) they are what the provider announced, or 0 when unknown.
    """

    data: bytes
    encoding: AudioEncoding
    sample_rate: int
    channels: int

    @property
    def duration_s(self) -> float | None:
        """Exact duration for PCM chunks (seconds); None for encoded ones."""
        width = {
            AudioEncoding.PCM_S16LE: 2,
            AudioEncoding.PCM_F32LE: 4,
            AudioEncoding.PCM_MULAW: 1,
            AudioEncoding.PCM_ALAW: 1,
        }.get(self.encoding)
        if width is None or not self.sample_rate or not self.channels:
            return None
        return len(self.data) / (width * self.sample_rate * self.channels)


@dataclass(frozen=True, slots=True)
class Timings:
    """Wall-clock seconds spent in each stage of one utterance.

    ``first_audio_s`` is from the start of synthesis to the first audio chunk (time to first
    audio); ``total_s`` covers validation, synthesis and transcoding.
    """

    synthesis_s: float
    transcode_s: float
    total_s: float
    first_audio_s: float | None = None


@dataclass(frozen=True, slots=True)
class FallbackNote:
    """A provider that did not speak, and why (e.g. "out of credits")."""

    provider: str
    reason: str


@dataclass(frozen=True, slots=True)
class Utterance:
    """Speech ready for a sink.

    ``audio`` is encoded per ``profile``; ``sample_rate`` (Hz) and ``channels`` are those of the
    encoded output; ``duration_s`` its length in seconds; ``voice`` says which provider, model and
    voice actually spoke; ``fallbacks`` which providers were tried before it and why they did not
    speak; ``cost_usd`` what the call cost (None: free or unknown); ``cached`` that it came
    from the audio cache (no provider was called).
    """

    request_id: str
    text: str
    audio: bytes
    profile: OutputProfile
    sample_rate: int
    channels: int
    duration_s: float
    voice: Voice
    timings: Timings
    loudness_lufs: float | None = None
    fallbacks: tuple[FallbackNote, ...] = ()
    cost_usd: float | None = None
    cached: bool = False
