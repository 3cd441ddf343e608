"""The speech pipeline: a :class:`SpeechRequest` in, an :class:`Utterance` out.

Steps, in order: expiry check → text normalisation → provider and voice resolution → option
validation (all before anything is spent) → synthesis → transcoding to the output profile →
expiry check again (a request that expired while synthesizing is dropped, not played late).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.audio import Transcoder
from bot.config import Settings
from bot.errors import ConfigError, InvalidRequest, RequestExpired
from bot.providers import Provider, ProviderRegistry, SynthesisInput
from bot.speech import AudioChunk, SpeechRequest, Timings, Utterance, Voice
from bot.text import normalize_text

__all__ = ["PreparedRequest", "SpeechPipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request that passed every check: what will be said, by whom, how."""

    request: SpeechRequest
    text: str
    provider: Provider
    voice: Voice
    options: dict[str, Any]

    def synthesis_input(self) -> SynthesisInput:
        return SynthesisInput(self.request.id, self.text, self.voice, self.options)


class SpeechPipeline:
    """Shared by every source; safe to use from many tasks at once."""

    def __init__(
        self,
        settings: Settings,
        registry: ProviderRegistry | None = None,
        transcoder: Transcoder | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or ProviderRegistry.default(settings)
        self.transcoder = transcoder or Transcoder(settings.audio)

    @staticmethod
    def check_expiry(request: SpeechRequest, stage: str) -> None:
        """Raise :class:`RequestExpired` if ``request`` is past its expiry."""
        overdue = request.overdue_s()
        if overdue > 0:
            raise RequestExpired(request.id, overdue, stage)

    async def prepare(self, request: SpeechRequest) -> PreparedRequest:
        """Validate everything about ``request`` without synthesizing.

        Raises :class:`bot.errors.InvalidRequest` subclasses (empty or over-long text, unknown
        provider, voice or model, invalid options), :class:`ConfigError` (the provider is not
        configured, e.g. has no API key) and :class:`RequestExpired`.
        """
        self.check_expiry(request, "before synthesis")
        text = normalize_text(request.text, self.settings.max_text_length)
        default_provider = self.settings.default_provider
        voice_name, model, options = request.voice, request.model, dict(request.options)
        if voice_name is None and request.provider in (None, default_provider):
            voice_name = self.settings.default_voice  # default_voice belongs to default_provider
        provider_name = request.provider
        named = self.settings.voices.get(voice_name.casefold()) if voice_name else None
        if named is not None:
            if provider_name is not None and provider_name != named.provider:
                raise InvalidRequest(
                    f"voice {voice_name!r} is a {named.provider} voice (voices.{voice_name} in "
                    f"the configuration); it cannot be used with provider {provider_name!r}"
                )
            provider_name, voice_name = named.provider, named.voice
            model = model or named.model
            options = {**named.options, **options}
        provider = self.registry.get(provider_name or default_provider)
        problem = provider.configuration_problem()
        if problem:
            raise ConfigError(f"provider {provider.name!r} cannot be used: {problem}")
        voice = await provider.resolve_voice(voice_name, model)
        validated = provider.validate_options(voice, options)
        return PreparedRequest(request, text, provider, voice, validated)

    async def speak(self, request: SpeechRequest) -> Utterance:
        """Synthesize ``request`` and encode it for its output profile."""
        started = time.perf_counter()
        prepared = await self.prepare(request)
        log.info(
            "request %s: speaking %d characters with %s for %s",
            request.id,
            len(prepared.text),
            prepared.voice.label,
            request.source.value,
        )
        chunks: list[AudioChunk] = []
        first_audio: float | None = None
        synthesis_started = time.perf_counter()
        async for chunk in prepared.provider.stream(prepared.synthesis_input()):
            if first_audio is None:
                first_audio = time.perf_counter() - synthesis_started
            chunks.append(chunk)
        synthesized = time.perf_counter()
        encoded = await self.transcoder.transcode(chunks, request.output)
        finished = time.perf_counter()
        self.check_expiry(request, "after synthesis")
        timings = Timings(
            synthesis_s=synthesized - synthesis_started,
            transcode_s=finished - synthesized,
            total_s=finished - started,
            first_audio_s=first_audio,
        )
        log.info(
            "request %s: %.2f s of audio in %.2f s (synthesis %.2f s, transcode %.2f s)",
            request.id,
            encoded.duration_s,
            timings.total_s,
            timings.synthesis_s,
            timings.transcode_s,
        )
        return Utterance(
            request_id=request.id,
            text=prepared.text,
            audio=encoded.data,
            profile=request.output,
            sample_rate=encoded.spec.sample_rate,
            channels=encoded.spec.channels,
            duration_s=encoded.duration_s,
            voice=prepared.voice,
            timings=timings,
            loudness_lufs=encoded.loudness.integrated_lufs,
        )

    async def aclose(self) -> None:
        await self.registry.aclose()
