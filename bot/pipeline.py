"""The speech pipeline: a :class:`SpeechRequest` in, an :class:`Utterance` out.

Steps, in order: expiry check → text normalisation → provider and voice resolution → option
validation (all before anything is spent) → the audio cache (a hit ends here) → the dispatcher
(budgets, credits, rate limit, the call; the fallback chain when the asked provider cannot
speak) → transcoding to the output profile → the cache is filled → expiry check again (a
request that expired while synthesizing is dropped, not played late).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.audio import Transcoder
from bot.cache import AudioCache, CacheEntry, cache_key
from bot.config import Settings
from bot.dispatch import Dispatcher
from bot.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidRequest,
    NoProviderSpoke,
    ProviderError,
    RequestExpired,
)
from bot.metrics import FALLBACKS
from bot.providers import Provider, ProviderRegistry, SynthesisInput
from bot.speech import FallbackNote, SpeechRequest, Timings, Utterance, Voice
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
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or ProviderRegistry.default(settings)
        self.transcoder = transcoder or Transcoder(settings.audio)
        self.dispatcher = dispatcher or Dispatcher(settings)
        self._cache: AudioCache | None = None

    @property
    def cache(self) -> AudioCache:
        """Opened on first use."""
        if self._cache is None:
            folder = self.settings.cache.dir or self.settings.data_dir / "cache"
            self._cache = AudioCache(folder, int(self.settings.cache.max_mb * 1024 * 1024))
        return self._cache

    def cache_key(self, prepared: PreparedRequest) -> str:
        audio = self.settings.audio.model_dump(
            mode="json", exclude={"ffmpeg_path", "ffmpeg_timeout_s"}
        )
        return cache_key(
            voice=prepared.voice,
            options=prepared.options,
            text=prepared.text,
            profile=prepared.request.output,
            audio=audio,
            engine=prepared.provider.engine_version(prepared.voice),
        )

    def will_hit(self, prepared: PreparedRequest) -> bool:
        """Whether :meth:`speak` would answer ``prepared`` from the cache."""
        caching = self.settings.cache.enabled and prepared.request.cache
        return caching and self.cache.contains(self.cache_key(prepared))

    def _from_cache(self, prepared: PreparedRequest, started: float) -> Utterance | None:
        entry = self.cache.get(self.cache_key(prepared))
        if entry is None:
            return None
        elapsed = time.perf_counter() - started
        log.info("request %s: from the cache (%s)", prepared.request.id, entry.voice.label)
        return Utterance(
            request_id=prepared.request.id,
            text=prepared.text,
            audio=entry.audio,
            profile=entry.profile,
            sample_rate=entry.sample_rate,
            channels=entry.channels,
            duration_s=entry.duration_s,
            voice=entry.voice,
            timings=Timings(0.0, 0.0, elapsed, 0.0),
            loudness_lufs=entry.loudness_lufs,
            cached=True,
        )

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

    async def _fallback(
        self, specs: list[str], tried: set[str], request: SpeechRequest, notes: list[FallbackNote]
    ) -> PreparedRequest | None:
        """Prepare the next usable entry of the fallback chain (consumed from ``specs``).

        A spec is a provider (``piper``), a provider and model (``segmind/chatterbox-tts``) or a
        named voice. The asked request's voice and options belong to the asked provider, so a
        fallback speaks with its own defaults.
        """
        while specs:
            spec = specs.pop(0)
            if spec.casefold() in self.settings.voices:
                fields: dict[str, Any] = {"voice": spec, "provider": None, "model": None}
            else:
                provider, _, model = spec.partition("/")
                fields = {"provider": provider, "model": model or None, "voice": None}
            candidate = request.model_copy(update={**fields, "options": {}})
            try:
                prepared = await self.prepare(candidate)
            except (InvalidRequest, ConfigError) as exc:
                notes.append(FallbackNote(spec, f"cannot be used: {exc}"))
                continue
            if prepared.provider.name in tried:
                continue
            return prepared
        return None

    async def speak(self, request: SpeechRequest) -> Utterance:
        """Synthesize ``request`` and encode it for its output profile.

        When the asked provider cannot speak (rate-limited past ``patience_s``, out of credits,
        over budget, down), the next provider of the ``fallback`` chain speaks and the utterance
        says why in ``fallbacks``. Raises what :meth:`prepare` raises, :class:`RequestExpired`,
        and, when no provider could speak, the provider's error (strict requests) or
        :class:`NoProviderSpoke`.
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        candidate = await self.prepare(request)
        caching = self.settings.cache.enabled and request.cache
        if caching and (hit := self._from_cache(candidate, started)) is not None:
            return hit
        notes: list[FallbackNote] = []
        specs = list(self.settings.fallback) if request.fallback else []
        tried = {candidate.provider.name}
        expires_in = request.overdue_s()
        expiry = None if expires_in == float("-inf") else loop.time() - expires_in
        while True:
            following = await self._fallback(specs, tried, request, notes)
            wait_until = expiry
            if following is not None:
                patience = loop.time() + self.settings.patience_s
                wait_until = patience if expiry is None else min(expiry, patience)
            log.info(
                "request %s: speaking %d characters with %s for %s",
                request.id,
                len(candidate.text),
                candidate.voice.label,
                request.source.value,
            )
            synthesis_started = time.perf_counter()
            try:
                dispatched = await self.dispatcher.run(
                    candidate.provider,
                    request,
                    candidate.synthesis_input(),
                    wait_until=wait_until,
                    expiry=expiry,
                )
                break
            except (ProviderError, BudgetExceeded) as exc:
                notes.append(FallbackNote(candidate.provider.name, str(exc)))
                if following is None:
                    if len(notes) > 1 and request.fallback:
                        raise NoProviderSpoke([(n.provider, n.reason) for n in notes]) from exc
                    raise
                FALLBACKS.labels(
                    candidate.provider.name, following.provider.name, type(exc).__name__
                ).inc()
                log.warning(
                    "request %s: %s did not speak (%s); %s speaks instead",
                    request.id,
                    candidate.provider.name,
                    exc,
                    following.provider.name,
                )
                candidate = following
                tried.add(candidate.provider.name)
        synthesized = time.perf_counter()
        encoded = await self.transcoder.transcode(dispatched.chunks, request.output)
        finished = time.perf_counter()
        self.check_expiry(request, "after synthesis")
        timings = Timings(
            synthesis_s=synthesized - synthesis_started,
            transcode_s=finished - synthesized,
            total_s=finished - started,
            first_audio_s=dispatched.first_audio_s,
        )
        log.info(
            "request %s: %.2f s of audio in %.2f s (synthesis %.2f s, transcode %.2f s)",
            request.id,
            encoded.duration_s,
            timings.total_s,
            timings.synthesis_s,
            timings.transcode_s,
        )
        if caching:
            # under the voice that spoke: a fallback's audio never answers for the asked voice
            self.cache.put(
                CacheEntry(
                    self.cache_key(candidate),
                    encoded.data,
                    request.output,
                    encoded.spec.sample_rate,
                    encoded.spec.channels,
                    encoded.duration_s,
                    encoded.loudness.integrated_lufs,
                    candidate.voice,
                )
            )
        return Utterance(
            request_id=request.id,
            text=candidate.text,
            audio=encoded.data,
            profile=request.output,
            sample_rate=encoded.spec.sample_rate,
            channels=encoded.spec.channels,
            duration_s=encoded.duration_s,
            voice=candidate.voice,
            timings=timings,
            loudness_lufs=encoded.loudness.integrated_lufs,
            fallbacks=tuple(n for n in notes if n.provider != candidate.provider.name),
            cost_usd=dispatched.cost_usd,
        )

    async def aclose(self) -> None:
        await self.registry.aclose()
        self.dispatcher.aclose()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
