"""A provider that lives only in the tests: proves a provider is a module plus a registry entry."""

from __future__ import annotations

import math
import struct
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.errors import ProviderError
from bot.ops.config import Settings
from bot.providers.base import Provider, SynthesisJob, Synthesized
from bot.speech import AudioChunk, AudioEncoding, Voice


class ToneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hertz: float = 440.0


class ToneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_character: float = Field(0.05, gt=0, le=1)


class ToneProvider(Provider):
    """Beeps instead of speaking; counts its calls; can be told to fail, or to return garbage
    or audio cut short (``mode``)."""

    kind = "tone"
    settings_model = ToneSettings
    calls: ClassVar[list[str]] = []
    mode: ClassVar[str] = "ok"

    def __init__(
        self, settings: ToneSettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: ToneSettings = settings

    async def list_voices(self) -> list[Voice]:
        return [Voice("tone", "sine", "a4", "A4 sine", "und")]

    def default_voice_id(self) -> str:
        return "a4"

    def options_model(self, voice: Voice) -> type[BaseModel]:  # noqa: ARG002 - a Provider method
        return ToneOptions

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        type(self).calls.append(job.text)
        if self.mode == "fail":
            raise ProviderError(self.name, "the tone generator is broken")
        if self.mode == "garbage":
            return Synthesized(
                AudioChunk(b"<html>502 Bad Gateway</html>" * 50, AudioEncoding.MP3, 0, 0)
            )
        seconds: Any = job.options.get("seconds_per_character", 0.05)
        if self.mode == "truncated":  # a cut-off answer: 10 ms whatever the text
            seconds = 0.01 / max(len(job.text), 1)
        rate = 16_000
        count = int(rate * seconds * len(job.text))
        samples = (
            int(8000 * math.sin(2 * math.pi * self.settings.hertz * i / rate)) for i in range(count)
        )
        pcm = struct.pack(f"<{count}h", *samples)
        return Synthesized(AudioChunk(pcm, AudioEncoding.PCM_S16LE, rate, 1))


class SlowListingTone(ToneProvider):
    """A tone provider whose voice list takes 2.5 s, like a cloud voice list fetched cold."""

    kind = "slowtone"

    async def list_voices(self) -> list[Voice]:
        import asyncio

        await asyncio.sleep(2.5)
        return await super().list_voices()
