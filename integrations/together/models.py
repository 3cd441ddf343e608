"""Together AI's TTS models: their request options, defaults and ranges, and Kokoro voice mixes.

Source: Together AI's ``POST /v1/audio/speech`` API page (kept in the project's seed pages).
Cartesia models honour ``sample_rate`` and ``response_encoding``; "Orpheus and Kokoro models
always output at 24000 Hz" and "always return pcm_s16le regardless of this setting", so their
schemas only accept those values: an option that would be silently ignored is refused instead.
``bit_rate`` is "only applicable when response_format is mp3" and "currently supported on
Cartesia models"; ``response_encoding`` only applies to ``raw``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FIXED_RATE",
    "MODELS",
    "KokoroMixPart",
    "MixSyntaxError",
    "TogetherModel",
    "parse_kokoro_mix",
]

#: What Orpheus and Kokoro always send: 24000 Hz, mono, pcm_s16le (for ``raw``).
FIXED_RATE = 24_000

ResponseFormat = Literal["mp3", "wav", "raw"]
ResponseEncoding = Literal["pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw"]
BitRate = Literal[32000, 64000, 96000, 128000, 192000]
# The 15 languages the page lists; "en" is its default.
Language = Literal[
    "en", "de", "fr", "es", "hi", "it", "ja", "ko", "nl", "pl", "pt", "ru", "sv", "tr", "zh"
]


class _Options(BaseModel):
    """Options common to every model.

    ``response_format`` None means Oyez chooses: ``raw`` PCM when streaming, else ``wav``
    (the API's default).
    """

    model_config = ConfigDict(extra="forbid")

    response_format: ResponseFormat | None = None
    response_encoding: ResponseEncoding | None = None
    language: Language = "en"

    @model_validator(mode="after")
    def _raw_only_encoding(self) -> Self:
        if self.response_encoding is not None and self.response_format != "raw":
            raise ValueError("response_encoding only applies when response_format is 'raw'")
        return self


class CartesiaOptions(_Options):
    """``cartesia/sonic`` and ``cartesia/sonic-2``.

    ``sample_rate`` (Hz): the page documents only the default, 44100; 8000 to 48000 is the range
    Cartesia's own engine offers. ``bit_rate`` (bits/s) is MP3 only; the API's default is 128000.
    """

    sample_rate: int = Field(44100, ge=8000, le=48000)
    bit_rate: BitRate | None = None

    @model_validator(mode="after")
    def _mp3_only_bit_rate(self) -> Self:
        if self.bit_rate is not None and self.response_format != "mp3":
            raise ValueError("bit_rate only applies when response_format is 'mp3'")
        return self


class FixedOutputOptions(_Options):
    """Orpheus and Kokoro: always 24000 Hz pcm_s16le, so those are the only values accepted."""

    response_encoding: Literal["pcm_s16le"] | None = None
    sample_rate: Literal[24000] | None = None


@dataclass(frozen=True, slots=True)
class TogetherModel:
    """One Together TTS model.

    ``default_voice`` is the voice the page's own examples use for it; ``mixes`` says whether
    the model takes Kokoro voice mixes (``a+b``, ``a(2)+b(1)``).
    """

    name: str
    title: str
    options: type[_Options]
    default_voice: str
    mixes: bool = False

    @property
    def fixed_output(self) -> bool:
        """True when the model ignores ``sample_rate`` and ``response_encoding``."""
        return self.options is FixedOutputOptions


MODELS: dict[str, TogetherModel] = {
    model.name: model
    for model in (
        TogetherModel("hexgrad/Kokoro-82M", "Kokoro 82M", FixedOutputOptions, "af_alloy", True),
        TogetherModel("canopylabs/orpheus-3b-0.1-ft", "Orpheus 3B", FixedOutputOptions, "tara"),
        TogetherModel("cartesia/sonic", "Cartesia Sonic", CartesiaOptions, "friendly sidekick"),
        # Not in the page's list of models, but its own code example uses it.
        TogetherModel("cartesia/sonic-2", "Cartesia Sonic 2", CartesiaOptions, "laidback woman"),
    )
}


@dataclass(frozen=True, slots=True)
class KokoroMixPart:
    """One voice of a mix and its weight (None: the server's equal weighting)."""

    voice: str
    weight: float | None

    def __str__(self) -> str:
        return self.voice if self.weight is None else f"{self.voice}({self.weight:g})"


class MixSyntaxError(ValueError):
    """A voice mix component that is malformed; ``component`` is that part as written."""

    def __init__(self, component: str, problem: str) -> None:
        self.component = component
        self.problem = problem
        super().__init__(f"voice mix component {component!r}: {problem}")


_PART = re.compile(r"^(?P<voice>[^()+\s]+)\s*(?:\((?P<weight>[^()]*)\))?$")


def parse_kokoro_mix(text: str) -> list[KokoroMixPart]:
    """Split ``af_bella(2)+af_heart(1)`` into its parts (names are not checked here).

    Raises :class:`MixSyntaxError` naming the bad component: an empty or malformed one, or a
    weight that is not a positive finite number.
    """
    parts = []
    for raw in text.split("+"):
        part = raw.strip()
        found = _PART.match(part)
        if found is None:
            raise MixSyntaxError(part, "write each voice as 'name' or 'name(weight)'")
        weight: float | None = None
        if found["weight"] is not None:
            try:
                weight = float(found["weight"])
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight) or weight <= 0:
                raise MixSyntaxError(part, "the weight must be a positive number")
        parts.append(KokoroMixPart(found["voice"], weight))
    return parts
