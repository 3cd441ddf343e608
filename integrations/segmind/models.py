"""Segmind's TTS models: their parameters, defaults and ranges, from Segmind's API pages.

Sources (kept verbatim in the project's seed pages): "3B Orpheus TTS (0.1) Serverless API",
"Chatterbox TTS Serverless API", "Chatterbox Turbo TTS Serverless API", "Openvoice Serverless
API" on segmind.com. Every documented default is sent explicitly, so a request says exactly what
it asked for; nothing undocumented is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

__all__ = ["MODELS", "SegmindModel"]

# Segmind's own sample voices from the API pages, used as the "default" voice of the cloning
# models so they speak without any set-up.
CHATTERBOX_SAMPLE = (
    "https://segmind-resources.s3.amazonaws.com/input/"
    "ef2a2b5c-3e3a-4051-a437-20a72bf175de-sample_audio.mp3"
)
TURBO_SAMPLE = (
    "https://segmind-resources.s3.amazonaws.com/output/"
    "70e9a9dd-e0f4-450f-a590-872996b44a01-chatterbox-turbo-input.mp3"
)
OPENVOICE_SAMPLE = "https://segmind-sd-models.s3.amazonaws.com/display_images/openvoice-ip.mp3"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrpheusOptions(_Options):
    temperature: float = Field(0.6, ge=0.1, le=1.5)
    top_p: float = Field(0.95, ge=0.1, le=1.0)
    max_new_tokens: int = Field(1200, ge=100, le=2000)
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0)


class ChatterboxOptions(_Options):
    reference_audio: AnyHttpUrl | None = None
    exaggeration: float = Field(0.5, ge=0.0, le=2.0)
    cfg_weight: float = Field(0.5, ge=0.0, le=2.0)
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    seed: int = 42
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.2, ge=1.0, le=2.0)


class ChatterboxTurboOptions(_Options):
    reference_audio: AnyHttpUrl | None = None  # required by the API: the voice supplies it
    temperature: float = Field(0.7, ge=0.05, le=2.0)
    top_k: int = Field(500, ge=0, le=1000)
    top_p: float = Field(0.9, ge=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.3, ge=1.0, le=2.0)
    seed: int = 42
    norm_loudness: bool = True


# The page lists 11 languages and shows ten; the eleventh is OpenVoice V2's Australian English.
OpenVoiceLanguage = Literal[
    "EN_NEWEST", "EN", "ES", "FR", "ZH", "JP", "KR", "EN_US", "EN_BR", "EN_INDIA", "EN_AU"
]


class OpenVoiceOptions(_Options):
    input_audio: AnyHttpUrl | None = None  # required by the API: the voice supplies it
    speed: float = Field(1.0, ge=0.5, le=2.0)
    language: OpenVoiceLanguage = "EN_NEWEST"


@dataclass(frozen=True, slots=True)
class SegmindModel:
    """One Segmind TTS model.

    ``voices`` maps voice ids to what the API is sent for them: a value for the ``voice_field``
    (Orpheus) or a reference audio URL (the cloning models). ``typical_s`` and ``cost_usd`` come
    from the API pages ("~117.52s", "~$0.124"; None where a page gives none); ``voice_field``
    names the request field that carries the voice.
    """

    slug: str
    title: str
    options: type[_Options]
    voice_field: str
    voices: dict[str, str]
    typical_s: float | None
    cost_usd: float | None
    sound_tags: str

    @property
    def default_voice(self) -> str:
        """The model's own default voice: the first listed."""
        return next(iter(self.voices))

    @property
    def clones(self) -> bool:
        """True when the voice is a reference recording (any http(s) URL may be given)."""
        return self.voice_field != "voice"


MODELS: dict[str, SegmindModel] = {
    model.slug: model
    for model in (
        SegmindModel(
            "chatterbox-tts",
            "Chatterbox",
            ChatterboxOptions,
            "reference_audio",
            {"default": CHATTERBOX_SAMPLE},
            18.08,
            0.02,
            "",
        ),
        SegmindModel(
            "orpheus-3b-0.1",
            "Orpheus 3B",
            OrpheusOptions,
            "voice",
            {name: name for name in ("dan", "tara", "josh", "emma")},  # dan: the API's default
            117.52,
            0.124,
            "<sigh> <groan> <cough>…",
        ),
        SegmindModel(
            "chatterbox-turbo-tts",
            "Chatterbox Turbo",
            ChatterboxTurboOptions,
            "reference_audio",
            {"default": TURBO_SAMPLE},
            None,
            None,
            "[laugh] [chuckle]…",
        ),
        SegmindModel(
            "openvoice",
            "OpenVoice",
            OpenVoiceOptions,
            "input_audio",
            {"default": OPENVOICE_SAMPLE},
            10.58,
            None,
            "",
        ),
    )
}
