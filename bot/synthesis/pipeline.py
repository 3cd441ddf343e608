"""The speech pipeline: a :class:`SpeechRequest` in, an :class:`Utterance` out.

:meth:`~SpeechPipeline.prepare` (every check, nothing spent) → the audio cache → the dispatcher
(budgets, credits, rate limit, fallback chain) → transcoding → the cache is filled → expiry
again. :meth:`~SpeechPipeline.speak_sentences` speaks sentence by sentence and
:meth:`~SpeechPipeline.speak_live` encodes a stream as it arrives (:mod:`bot.audio.live`): a
streaming provider's as Ogg Opus, and as PCM the pieces of a provider that streams PCM
(:meth:`Provider.streams_pcm`: Piper split at its vocoder) for ``wav``. Requests of one cache
key at once make one synthesis: a flight (:mod:`bot.synthesis.flights`), or a live one read
by each of them.
Over 450 lines because those entry points share one cache, dispatcher and encoder pool and the
fallback loop between them; the shapes it hands on are in :mod:`bot.synthesis.prepared`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bot.audio.live import LiveUtterance, OpusStreamEncoder, PcmStreamEncoder, StreamEncoders
from bot.audio.ogg import opus_packets
from bot.audio.transcode import EncodedAudio, Transcoder, VoiceGains, wav_pcm
from bot.errors import (
    BadAudio,
    BudgetExceeded,
    ConfigError,
    InvalidRequest,
    NoProviderSpoke,
    OyezError,
    ProviderError,
    RequestExpired,
    TranscodeError,
)
from bot.ops.config import Settings
from bot.ops.logs import bind_request
from bot.ops.metrics import FALLBACKS, REQUESTS, SYNTHESIS_SECONDS
from bot.providers.base import ProviderRegistry, SynthesisJob
from bot.providers.dispatch import Dispatched, Dispatcher
from bot.speech import (
    AudioChunk,
    FallbackNote,
    OutputProfile,
    SpeechRequest,
    Timings,
    Utterance,
    Voice,
)
from bot.synthesis.cache import AudioCache, Cache, CacheEntry, HotCache, cache_key
from bot.synthesis.flights import Flights, LocalFlights, flown
from bot.synthesis.prepared import PreparedRequest, Segment
from bot.synthesis.pronounce import Pronunciations
from bot.synthesis.sentences import split_sentences
from bot.synthesis.text import normalize_text

__all__ = ["RemoteSynthesizer", "SpeechPipeline"]

log = logging.getLogger(__name__)

#: Longest sentence (characters) synthesized in one piece when a text is spoken sentence by
#: sentence; longer ones are cut at a clause break.
SENTENCE_MAX_CHARS = 300
#: The same for a text's first sentence, whose length is the time to first audio (about that
#: of a short one-sentence request).
FIRST_SENTENCE_MAX_CHARS = 50
#: Safety factor on the expected synthesis time of a text's second sentence (Segment.lead_s).
LEAD_MARGIN = 1.25
#: Seconds of audio below which a text with any word in it was not said (the audio is broken).
MIN_SPEECH_S = 0.1
#: Longest wait, seconds, for another request making the same audio (then it is made here).
FLIGHT_WAIT_S = 120.0


class RemoteSynthesizer(Protocol):
    """Where cache misses are made when not here (:class:`bot.synthesis.remote.RemoteSynthesis`:
    the synth workers)."""

    async def use(self) -> bool:
        """Whether this miss goes there."""

    async def speak(self, prepared: PreparedRequest, *, live: bool) -> Utterance | LiveUtterance:
        """``prepared`` made there (a live utterance with ``live``)."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Spoken:
    """The provider's take that spoke: its request, its audio, when (``time.perf_counter``) its
    synthesis started and ended, and its audio encoded (while it arrived, when ``streamed``)."""

    prepared: PreparedRequest
    dispatched: Dispatched
    synthesis_started: float
    synthesized: float
    encoded: EncodedAudio
    streamed: bool


class _Turn:
    """A sentence's place in line when a text is spoken sentence by sentence: its provider is
    asked once the sentence before has its audio from its provider (:meth:`wait`), and the one
    after may go once this one has (:meth:`over`), while this one is still transcoded and
    stored. Its cache lookup waits for nobody."""

    def __init__(self, before: _Turn | None) -> None:
        self.before = before
        self.voice: Voice | None = None
        self.held = False
        self._over = asyncio.Event()

    def over(self, voice: Voice | None) -> None:
        """This sentence's provider call is over, ``voice`` having said it (None: none did);
        or it needed none (a hit). Only the first call counts."""
        if not self._over.is_set():
            self.voice = voice
            self._over.set()

    def task_done(self, _task: asyncio.Task[Any]) -> None:
        """Its task's done callback: a task cancelled before it ran is over too (a held turn
        is its synthesis's to end)."""
        if not self.held:
            self.over(None)

    def hold(self) -> None:
        """Keep the turn past the sentence's task (a live stream's synthesis goes on after it):
        the synthesis says when it is over."""
        self.held = True

    def synthesis_done(self, synthesis: asyncio.Task[Utterance]) -> None:
        """A held turn's synthesis ended: over, with the voice that spoke (None: it failed)."""
        spoke = None
        if not synthesis.cancelled() and synthesis.exception() is None:
            spoke = synthesis.result().voice
        self.over(spoke)

    async def wait(self) -> Voice | None:
        """Until the sentence before's provider call is over: the voice that said it."""
        if self.before is None:
            return None
        await self.before._over.wait()
        return self.before.voice


class _TookOver(Exception):  # a signal, not an error: it never leaves the pipeline
    """The sentence before was said by ``voice``, which took over from the asked one: this one
    is to be said by it too."""

    def __init__(self, voice: Voice) -> None:
        super().__init__(voice.label)
        self.voice = voice


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
        self._cache: Cache | None = None
        #: Makes the cache (its folder, its cap in bytes): the engine's when shared; None: an
        #: :class:`AudioCache` (SQLite index).
        self.cache_factory: Callable[[Path, int], Cache] | None = None
        self.pronunciations = Pronunciations(settings.pronunciations)
        #: Who makes a cache key several requests missed at once, so that one call is made
        #: (and billed) for them all: this process's tasks by default, every process's when
        #: the engine shares them (engine.url). None: each makes its own.
        self.flights: Flights | None = LocalFlights()
        #: The live syntheses under way, by cache key: a request of the same audio reads one.
        self._live: dict[str, LiveUtterance] = {}
        #: The synth workers, when this process sends them its cache misses (synth.mode).
        self.remote: RemoteSynthesizer | None = None
        self.gains = VoiceGains(settings.audio.loudness_target_lufs)
        self.stream_encoders = StreamEncoders(self.transcoder, self.gains)
        # per voice label: its last synthesis time per character and transcoding time (s)
        self._rates: dict[str, tuple[float, float]] = {}

    @property
    def cache(self) -> Cache:
        """Opened on first use."""
        if self._cache is None:
            folder = self.settings.cache.dir or self.settings.data_dir / "cache"
            make = self.cache_factory or AudioCache
            cache = make(folder, int(self.settings.cache.max_mb * 1024 * 1024))
            memory = int(self.settings.cache.memory_mb * 1024 * 1024)
            # a cache only this process reads stores a fresh entry after it is handed on; one
            # the engine shares (flights, synth workers) before: others wait for it there
            behind = self.cache_factory is None
            self._cache = HotCache(cache, memory, put_behind=behind) if memory > 0 else cache
        return self._cache

    def cache_key(self, prepared: PreparedRequest) -> str:
        exclude = {"ffmpeg_path", "ffmpeg_timeout_s"}
        if prepared.request.output is not OutputProfile.MP3:
            # MP3's own: the other profiles' keys stay as they were
            exclude |= {"mp3_channels", "mp3_sample_rate"}
        audio = self.settings.audio.model_dump(mode="json", exclude=exclude)
        return cache_key(
            voice=prepared.voice,
            options=prepared.options,
            text=prepared.text,
            profile=prepared.request.output,
            audio=audio,
            engine=prepared.provider.engine_version(prepared.voice),
        )

    async def will_hit(self, prepared: PreparedRequest) -> bool:
        """Whether :meth:`speak` would answer ``prepared`` from the cache."""
        caching = self.settings.cache.enabled and prepared.request.cache
        return caching and await self.cache.contains(self.cache_key(prepared))

    async def _from_cache(
        self, prepared: PreparedRequest, started: float, key: str
    ) -> Utterance | None:
        """``prepared``'s utterance from the cache under ``key`` (its :meth:`cache_key`)."""
        entry = await self.cache.get(key)
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
        configured, e.g. has no API key) and :class:`RequestExpired`. The prepared text is
        the one to say: rewritten by the pronunciation dictionaries (:attr:`pronunciations`)
        after the length check; ``request.speed`` becomes the provider's rate options.
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
        if request.speed is not None:
            options = {**(provider.rate_options(voice, request.speed) or {}), **options}
        validated = provider.validate_options(voice, options)
        text = await self.pronunciations.apply(text, request.guild)
        return PreparedRequest(request, text, provider, voice, validated)

    async def _fallback(
        self, specs: list[str], tried: set[str], asked: PreparedRequest, notes: list[FallbackNote]
    ) -> PreparedRequest | None:
        """Prepare the next usable entry of the fallback chain (consumed from ``specs``).

        A spec is a provider (``piper``), a provider and model (``segmind/chatterbox-tts``) or a
        named voice. The asked request's voice and options belong to the asked provider, so a
        fallback speaks with its own defaults; it says the asked text as prepared (a sentence's
        text is prepared already: the pronunciations are not applied twice).
        """
        request = asked.request
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
            return replace(prepared, text=asked.text)
        return None

    async def speak(self, request: SpeechRequest | PreparedRequest) -> Utterance:
        """Synthesize ``request`` (prepared here unless it already is) for its output profile.

        When the asked provider cannot speak (rate-limited past ``patience_s``, out of credits,
        over budget, down), the next provider of the ``fallback`` chain speaks and the utterance
        says why in ``fallbacks``. Raises what :meth:`prepare` raises, :class:`RequestExpired`,
        and, when no provider could speak, the provider's error (strict requests) or
        :class:`NoProviderSpoke`.
        """
        started = time.perf_counter()
        prepared = await self._prepared(request)
        utterance = await self._speak(prepared, started, live=False)
        assert isinstance(utterance, Utterance)
        return utterance

    async def speak_live(
        self, request: SpeechRequest | PreparedRequest
    ) -> Utterance | LiveUtterance:
        """Like :meth:`speak`, but playable while the provider is still streaming.

        An Ogg Opus (``discord``) request that misses the cache, from a provider that streams in a
        sentence (:meth:`Provider.streams_live`), gives a :class:`LiveUtterance` at once (see
        :mod:`bot.audio.live`); so does a ``wav`` one from a provider that streams PCM pieces
        (:meth:`Provider.streams_pcm`) once the voice's pieces have a learned gain; otherwise
        the complete :class:`Utterance`. Raises what
        :meth:`prepare` raises; a live utterance's synthesis errors come from its ``packets()``
        and ``result()``.
        """
        started = time.perf_counter()
        return await self._speak(await self._prepared(request), started, live=True)

    async def _prepared(self, request: SpeechRequest | PreparedRequest) -> PreparedRequest:
        """:meth:`_ensure_prepared`, its failures counted in the request metrics."""
        plain = request.request if isinstance(request, PreparedRequest) else request
        try:
            return await self._ensure_prepared(request)
        except RequestExpired:
            _count(plain, plain.provider or self.settings.default_provider, "expired")
            raise
        except OyezError:
            _count(plain, plain.provider or self.settings.default_provider, "invalid")
            raise

    async def _ensure_prepared(self, request: SpeechRequest | PreparedRequest) -> PreparedRequest:
        """``request`` prepared; one prepared already is only checked for expiry again."""
        if isinstance(request, PreparedRequest):
            self.check_expiry(request.request, "before synthesis")
            return request
        return await self.prepare(request)

    async def _speak(
        self, prepared: PreparedRequest, started: float, *, live: bool, turn: _Turn | None = None
    ) -> Utterance | LiveUtterance:
        """:meth:`speak` (:meth:`speak_live` with ``live``) of a prepared request; with ``turn``,
        its provider is asked in that turn (a cache hit is answered at once)."""
        request = prepared.request
        caching = self.settings.cache.enabled and request.cache
        key = self.cache_key(prepared) if caching else None
        if key is not None and (hit := await self._from_cache(prepared, started, key)) is not None:
            _count(request, hit.voice.provider, "cached")
            SYNTHESIS_SECONDS.labels(provider=hit.voice.provider).observe(
                time.perf_counter() - started
            )
            return hit
        if turn is not None:
            before = await turn.wait()
            if before is not None and before != prepared.voice:
                raise _TookOver(before)
        job = prepared.job()
        streams = (
            live
            and request.output is OutputProfile.OGG_OPUS
            and prepared.provider.streams_live(job)
        )
        pcm = live and self._streams_pcm(prepared, job)
        leader = self._live.get(key) if key is not None else None
        if leader is not None:
            shared = await self._shared(leader, prepared, live=live, turn=turn if pcm else None)
            if shared is not None:
                return shared
        if self.remote is not None and await self.remote.use():
            return await self._remotely(self.remote, prepared, key, live=streams)
        if not (streams or pcm):
            if key is not None and self.flights is not None:
                return await self._flown(prepared, started, turn, key)
            return await self._synthesize(request, prepared, started, None, turn)
        stream = LiveUtterance(request.id, prepared.text, prepared.voice)
        # a PCM stream keeps its sentence's turn until its provider is done: the next sentence's
        # synthesis (Piper's, on the same cores) would slow this one's pieces down
        held = turn if pcm else None
        task = asyncio.create_task(
            self._synthesize(request, prepared, started, stream, held), name="oyez-live-synthesis"
        )
        if held is not None:
            held.hold()
            task.add_done_callback(held.synthesis_done)
        stream.attach(task)
        if key is not None:
            self._made_live(key, stream)
        return stream

    async def _remotely(
        self, remote: RemoteSynthesizer, prepared: PreparedRequest, key: str | None, *, live: bool
    ) -> Utterance | LiveUtterance:
        """``prepared`` made by the synth workers (a live utterance with ``live``)."""
        speech = await remote.speak(prepared, live=live)
        if isinstance(speech, LiveUtterance) and key is not None:
            self._made_live(key, speech)
        if isinstance(speech, Utterance) and not speech.cached and speech.text:
            timings = speech.timings  # what the next sentence's lead is reckoned from
            per_character = timings.synthesis_s / len(speech.text)
            self._rates[speech.voice.label] = (per_character, timings.transcode_s)
        return speech

    def _made_live(self, key: str, stream: LiveUtterance) -> None:
        """``stream`` makes ``key``'s audio: requests of it meanwhile read it (:meth:`_shared`)
        until its synthesis is over (and its audio in the cache)."""
        self._live[key] = stream
        stream.add_done_callback(functools.partial(self._live_over, key, stream))

    def _live_over(self, key: str, stream: LiveUtterance, _task: asyncio.Task[Utterance]) -> None:
        if self._live.get(key) is stream:
            del self._live[key]

    async def _shared(
        self, leader: LiveUtterance, prepared: PreparedRequest, *, live: bool, turn: _Turn | None
    ) -> Utterance | LiveUtterance | None:
        """``prepared``'s audio from ``leader``, the live synthesis making it now (another
        request asked the same sentence of the same voice a moment before): one paid call for
        both. With ``live``, a reader of its stream (from its first packet; ``turn`` held as the
        leader's, until the synthesis ends), which shares its outcome; else its utterance once
        made, or None when it can no longer be read, or it failed (this request is then made on
        its own)."""
        request = prepared.request
        reader = leader.follow(request.id)
        if reader is None:
            return None
        log.info(
            "request %s: reads request %s's synthesis (the same audio)", request.id, reader.follows
        )
        if live:
            if turn is not None:  # as the leader's: its pieces are made on the same cores
                turn.hold()
                reader.add_done_callback(turn.synthesis_done)
            counted = functools.partial(_count_shared, request, prepared.provider.name)
            reader.add_done_callback(counted)
            return reader
        try:
            utterance = await reader.result()
        except OyezError:
            return None
        except asyncio.CancelledError:
            reader.cancel()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None  # the synthesis was stopped, not this request
        _count(request, utterance.voice.provider, "cached")
        return utterance

    def _streams_pcm(self, prepared: PreparedRequest, job: SynthesisJob) -> bool:
        """Whether ``prepared`` (a ``wav`` request) is said in pieces as they are made: its
        provider streams PCM (:meth:`Provider.streams_pcm`) and the gain its pieces need is
        known (the first is made whole, and teaches it)."""
        return (
            prepared.request.output is OutputProfile.WAV
            and prepared.provider.streams_pcm(job)
            and self._pieces_gain_known(prepared.voice)
        )

    def _pieces_gain_known(self, voice: Voice) -> bool:
        """Whether ``voice``'s PCM pieces have the gain they need (or need none: normalisation
        is off)."""
        normalise = self.settings.audio.normalize_loudness
        return not normalise or self.gains.get(_pieces_label(voice)) is not None

    async def _flown(
        self, prepared: PreparedRequest, started: float, turn: _Turn | None, key: str
    ) -> Utterance:
        """Synthesize ``prepared`` (its cache key ``key``), unless another request is making the
        same audio (in this process, or in any with a shared engine): then that audio, from
        the cache once it is there (see :mod:`bot.synthesis.flights`)."""
        assert self.flights is not None
        request = prepared.request

        async def cached() -> Utterance | None:
            # the request's own lookup was counted (a miss): these looks again are not
            if not await self.cache.contains(key):
                return None
            hit = await self._from_cache(prepared, started, key)
            if hit is not None:
                _count(request, hit.voice.provider, "cached")
            return hit

        left = -request.overdue_s()
        return await flown(
            self.flights,
            key,
            make=lambda: self._synthesize(request, prepared, started, None, turn),
            cached=cached,
            wait_s=min(left, FLIGHT_WAIT_S),
        )

    async def speak_sentences(
        self,
        request: SpeechRequest | PreparedRequest,
        *,
        lookahead: int = 2,
        live: bool = False,
        split: bool = True,
    ) -> AsyncGenerator[Segment, None]:
        """One :class:`Segment` per sentence of ``request``, in order, each sentence its own
        :meth:`speak` (:meth:`speak_live` with ``live``): cache, rate limits, credits and
        fallbacks apply to each. The first is made alone; then ``lookahead`` more are under
        way: looked up in the cache at once, their providers asked in order, each once the
        sentence before has its audio (while that one is transcoded).
        One sentence (or ``split`` off) is one plain :meth:`speak`. Later sentences do not
        expire. Once a sentence fell back (a live one too, its stream broken off midway), the
        rest is said by the voice that took over, never first asked of the one that failed.
        Raises what :meth:`prepare` raises before the first segment, a sentence's error in its
        turn; closing the generator cancels what is under way.
        """
        started = time.perf_counter()
        prepared = await self._ensure_prepared(request)
        sentences = (
            split_sentences(
                prepared.text, SENTENCE_MAX_CHARS, first_max_chars=FIRST_SENTENCE_MAX_CHARS
            )
            if split
            else []
        )
        wav = prepared.request.output is OutputProfile.WAV
        if len(sentences) <= 1:
            # a wav sentence alone is made whole: in pieces it would end ~15 ms later, and its
            # end is what a client that waits for all of it (Home Assistant 2025.4) waits for;
            # a longer text's first sentence goes in pieces, its end hidden behind the rest
            one = await self._speak(prepared, started, live=live and not wav)
            yield Segment(0, 1, one)
            return
        count = len(sentences)
        parts = _sentence_parts(prepared, sentences)
        tasks: dict[int, asyncio.Task[Utterance | LiveUtterance]] = {}
        turns: dict[int, _Turn] = {}

        took_over: list[Voice] = []  # the voice that took over from the asked one, once it did

        scheduled = 0

        def start_until(end: int) -> None:
            """Start the sentences before ``end``, each in its turn after the one before."""
            nonlocal scheduled
            while scheduled < min(end, count):
                turn = turns[scheduled] = _Turn(turns.get(scheduled - 1))
                # a wav text's later sentences are made while the first is heard: whole, they
                # take less of Piper's time than in pieces (no vocoder context made twice)
                live_here = live and (scheduled == 0 or not wav)
                task = tasks[scheduled] = asyncio.create_task(
                    self._in_turn(turn, parts[scheduled], took_over, live=live_here),
                    name="oyez-sentence",
                )
                task.add_done_callback(turn.task_done)  # a held turn's synthesis ends it
                scheduled += 1

        speech: Utterance | LiveUtterance | None = None
        first: Utterance | LiveUtterance | None = None
        try:
            for i in range(count):
                if not took_over and (voice := _live_fell_back(speech, prepared)) is not None:
                    # a stream fell back (its sentence said again by another voice): the rest
                    # is said by that voice, and what was under way in the old one is redone
                    took_over.append(voice)
                    await _cancel_all(tasks)
                    turns.clear()
                    scheduled = i
                start_until(i + 1)
                speech = await tasks.pop(i)
                if i == 0:
                    first = speech
                elif isinstance(speech, Utterance):
                    speech = await self._at_rate_of(first, speech)
                # the first went alone, its transcoding too: the fastest start; each later one's
                # provider is asked while the one before is transcoded
                start_until(i + 1 + lookahead)
                if i == 0 and 1 in tasks:
                    made = asyncio.Event()
                    tasks[1].add_done_callback(lambda _, made=made: made.set())  # type: ignore[misc]
                    yield Segment(0, count, speech, self._lead_s(speech, sentences[1]), made)
                else:
                    yield Segment(i, count, speech)
        finally:
            await _cancel_all(tasks)

    async def _at_rate_of(
        self, first: Utterance | LiveUtterance | None, later: Utterance
    ) -> Utterance:
        """``later`` (a later sentence of the text ``first`` began) at ``first``'s rate: an MP3
        stream or a Wyoming ``audio-start`` has one rate, and a voice that took over midway may
        speak at another (Ogg Opus is always 48 kHz). The same utterance when the rates match
        or ``first``'s is not known yet."""
        rate = first.sample_rate if first is not None else None
        if rate is None or later.sample_rate == rate or later.profile is OutputProfile.OGG_OPUS:
            return later
        log.info(
            "request %s: a sentence at %d Hz resampled to the text's %d Hz (%s took over)",
            later.request_id,
            later.sample_rate,
            rate,
            later.voice.label,
        )
        audio = await self.transcoder.at_rate(later.audio, later.profile, rate)
        return replace(later, audio=audio, sample_rate=rate)

    async def _in_turn(
        self, turn: _Turn, part: PreparedRequest, took_over: list[Voice], *, live: bool
    ) -> Utterance | LiveUtterance:
        """``part`` (a sentence of a text) said in its turn (sentence order is the providers'
        order), in the voice that took over from the asked one once one did (the sentence
        before says which; ``took_over`` notes it for the rest of the text)."""

        async def said(asking: PreparedRequest, turn: _Turn | None) -> Utterance | LiveUtterance:
            return await self._speak(
                await self._prepared(asking), time.perf_counter(), live=live, turn=turn
            )

        speech: Utterance | LiveUtterance | None = None
        try:
            asking = await self._keep_voice(part, took_over)
            try:
                speech = await said(asking, turn)
            except _TookOver as took:
                took_over[:] = took_over or [took.voice]
                speech = await said(await self._keep_voice(part, took_over), None)
            else:
                if isinstance(speech, Utterance) and speech.cached and turn.before is not None:
                    # a hit waits for nobody's turn: it stays if the voice before was its own
                    before = await turn.wait()
                    if before is not None and before != asking.voice:
                        took_over[:] = took_over or [before]
                        speech = await said(await self._keep_voice(part, took_over), None)
            return speech
        finally:
            if not turn.held:
                turn.over(speech.voice if speech is not None else None)

    def _lead_s(self, first: Utterance | LiveUtterance, following: str) -> float:
        """How long the first sentence should wait so that ``following`` (whose synthesis
        starts now) is likely made when the first has been said."""
        rate = self._rates.get(first.voice.label)
        if isinstance(first, LiveUtterance) or rate is None:
            return 0.0
        per_character_s, fixed_s = rate
        expected_s = per_character_s * len(following) + fixed_s
        return max(0.0, LEAD_MARGIN * expected_s - first.duration_s)

    async def _synthesize(
        self,
        request: SpeechRequest,
        candidate: PreparedRequest,
        started: float,
        live: LiveUtterance | None,
        turn: _Turn | None = None,
    ) -> Utterance:
        """:meth:`_synthesize_once`, counted in the request metrics, its log lines carrying the
        request id."""
        with bind_request(request.id):
            try:
                utterance = await self._synthesize_once(request, candidate, started, live, turn)
            except RequestExpired:
                _count(request, candidate.provider.name, "expired")
                raise
            except OyezError:
                _count(request, candidate.provider.name, "failed")
                raise
        _count(request, utterance.voice.provider, "ok")
        SYNTHESIS_SECONDS.labels(provider=utterance.voice.provider).observe(
            time.perf_counter() - started
        )
        return utterance

    async def _synthesize_once(
        self,
        request: SpeechRequest,
        candidate: PreparedRequest,
        started: float,
        live: LiveUtterance | None,
        turn: _Turn | None,
    ) -> Utterance:
        """Dispatch (with the fallback chain), transcode and cache ``candidate``; with ``live``,
        a provider that streams within a sentence is encoded as it arrives into ``live``; with
        ``turn``, the next sentence's provider is asked while this one is transcoded."""
        notes: list[FallbackNote] = []
        spoken = await self._dispatch(request, candidate, live, notes, turn)
        candidate, dispatched, encoded = spoken.prepared, spoken.dispatched, spoken.encoded
        streamed = spoken.streamed
        if live is not None and not streamed:
            _put_whole(live, encoded)
        finished = time.perf_counter()
        if live is None:  # live audio is already playing: too late to drop it
            self.check_expiry(request, "after synthesis")
        timings = Timings(
            synthesis_s=spoken.synthesized - spoken.synthesis_started,
            transcode_s=finished - spoken.synthesized,
            total_s=finished - started,
            first_audio_s=dispatched.first_audio_s,
        )
        if not streamed and candidate.text:
            self._rates[candidate.voice.label] = (
                timings.synthesis_s / len(candidate.text),
                timings.transcode_s,
            )
        log.info(
            "request %s: %.2f s of audio in %.2f s (synthesis %.2f s, transcode %.2f s)%s",
            request.id,
            encoded.duration_s,
            timings.total_s,
            timings.synthesis_s,
            timings.transcode_s,
            ", streamed" if streamed else "",
        )
        if self.settings.cache.enabled and request.cache:
            # under the voice that spoke: a fallback's audio never answers for the asked voice
            key = self.cache_key(candidate)
            await self.cache.put(_cache_entry(key, request.output, encoded, candidate.voice))
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

    async def _dispatch(
        self,
        request: SpeechRequest,
        candidate: PreparedRequest,
        live: LiveUtterance | None,
        notes: list[FallbackNote],
        turn: _Turn | None = None,
    ) -> _Spoken:
        """Ask ``candidate``'s provider, then each of the fallback chain until one speaks.

        Each one that did not is noted in ``notes``. A live stream that breaks off after some
        of its audio is out is said again, from the sentence's start, by the next of the chain
        (its packets follow in ``live``: half a sentence tells a listener little), or, with
        none left, raises at once. Raises the last provider's error (or
        :class:`NoProviderSpoke`) when none spoke. ``turn`` is over once the asked provider's audio
        is here (after a fallback, once the sentence is done: the next is said by the voice
        that took over, never first asked of the one that failed).
        """
        loop = asyncio.get_running_loop()
        specs = list(self.settings.fallback) if request.fallback else []
        tried = {candidate.provider.name}
        expires_in = request.overdue_s()
        expiry = None if expires_in == float("-inf") else loop.time() - expires_in
        while True:
            following = await self._fallback(specs, tried, candidate, notes)
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
            job, gains = self._job(candidate, request.output, live)
            lease = self._live_encoder(candidate, job, live)
            encoder: OpusStreamEncoder | PcmStreamEncoder | None = None
            try:
                async with lease as encoder:
                    on_chunk = self._feeder(candidate.voice, encoder)
                    dispatched = await self.dispatcher.synthesize(
                        candidate.provider,
                        request,
                        job,
                        wait_until=wait_until,
                        expiry=expiry,
                        on_chunk=on_chunk,
                    )
                    synthesized = time.perf_counter()
                    if turn is not None and not notes:  # the asked voice: the next may go on
                        turn.over(candidate.voice)
                    if encoder is not None:
                        encoded = await encoder.finish()
                    else:
                        encoded = await self._transcode(
                            candidate, dispatched, request.output, gains
                        )
                    # a Piper sentence's pieces are not peak-normalised: their level varies
                    # more from one sentence to the next, so their gain is an average
                    self.gains.learn(gains, encoded, weight=0.5 if job.pcm_pieces else 1.0)
                    if encoder is None:  # the voice's next sentence is likely the same shape
                        self.transcoder.build_ahead(dispatched.chunks, self.gains.get(gains))
                return _Spoken(
                    candidate,
                    dispatched,
                    synthesis_started,
                    synthesized,
                    encoded,
                    encoder is not None,
                )
            except (ProviderError, BudgetExceeded) as exc:
                broke = live is not None and encoder is not None and encoder.fed
                if broke and following is None:
                    raise  # its audio is out and no other voice can take over: it ends there
                reason = str(exc)
                if broke and live is not None:
                    # half a sentence tells little: the fallback says it again from its start
                    reason = (
                        f"its stream broke off after {live.put_s:.1f} s of audio ({exc}); "
                        "the sentence was said again from its start"
                    )
                notes.append(FallbackNote(candidate.provider.name, reason))
                if following is None:
                    if len(notes) > 1 and request.fallback:
                        raise NoProviderSpoke([(n.provider, n.reason) for n in notes]) from exc
                    raise
                self._fall_back(request, candidate, following, exc, reason)
                candidate = following
                tried.add(candidate.provider.name)

    def _job(
        self, candidate: PreparedRequest, output: OutputProfile, live: LiveUtterance | None
    ) -> tuple[SynthesisJob, str]:
        """``candidate``'s job, and the label its gain is learned under (:class:`VoiceGains`).
        A ``wav`` job of a provider that streams PCM asks for pieces when they are played as
        they come (``live``), or to learn the gain they need while none is known (a Piper
        sentence in pieces is not peak-normalised: its level differs, so its gain is its
        own); otherwise the sentence is made whole, which costs Piper less."""
        job = candidate.job()
        wanted = live is not None or not self._pieces_gain_known(candidate.voice)
        if output is OutputProfile.WAV and candidate.provider.streams_pcm(job) and wanted:
            return replace(job, pcm_pieces=True), _pieces_label(candidate.voice)
        return job, candidate.voice.label

    def _live_encoder(
        self, candidate: PreparedRequest, job: SynthesisJob, live: LiveUtterance | None
    ) -> contextlib.AbstractAsyncContextManager[OpusStreamEncoder | PcmStreamEncoder | None]:
        """What encodes ``live``'s stream as it arrives: an Opus encoder for a provider that
        streams live, a :class:`PcmStreamEncoder` for one that streams PCM pieces
        (``job.pcm_pieces``), none otherwise (the audio is then put into ``live`` whole, once
        made). The Opus encoder is aborted when the block fails."""
        if live is not None and job.pcm_pieces:
            gain = self.gains.get(_pieces_label(candidate.voice))
            if not self.settings.audio.normalize_loudness:
                gain = None
            return contextlib.nullcontext(PcmStreamEncoder(self.transcoder, live, gain))
        if live is not None and candidate.provider.streams_live(job):
            return self.stream_encoders.lease(candidate.voice, live.put)
        return contextlib.nullcontext(None)

    def _feeder(
        self, voice: Voice, encoder: OpusStreamEncoder | PcmStreamEncoder | None
    ) -> Callable[[AudioChunk], Awaitable[None]] | None:
        """What gives ``encoder`` each chunk as it arrives (None: no encoder)."""
        if isinstance(encoder, PcmStreamEncoder):
            return encoder.feed
        if encoder is not None:
            return functools.partial(self.stream_encoders.feed, voice, encoder)
        return None

    async def _keep_voice(self, part: PreparedRequest, took_over: list[Voice]) -> PreparedRequest:
        """``part`` (a sentence of a text), in the voice that took over the text once one did
        (noted in ``took_over``), with its default options."""
        if not took_over:
            return part
        voice = took_over[0]
        fields = {"provider": voice.provider, "model": voice.model, "voice": voice.id}
        request = part.request.model_copy(update={**fields, "options": {}})
        return replace(await self.prepare(request), text=part.text)

    async def _transcode(
        self,
        candidate: PreparedRequest,
        dispatched: Dispatched,
        output: OutputProfile,
        gains: str,
    ) -> EncodedAudio:
        """``dispatched``'s audio in ``output``. Audio that ffmpeg cannot decode, or that is too
        short for any word, is the provider's failure (:class:`BadAudio`): the chain goes on."""
        name = candidate.provider.name
        try:
            encoded = await self.transcoder.transcode(
                dispatched.chunks, output, gain_db=self.gains.get(gains)
            )
        except TranscodeError as exc:
            raise BadAudio(name, f"{_described(dispatched)} that could not be decoded") from exc
        if encoded.duration_s < MIN_SPEECH_S and any(c.isalnum() for c in candidate.text):
            raise BadAudio(
                name, f"{encoded.duration_s:.2f} s of audio for {len(candidate.text)} characters"
            )
        return encoded

    @staticmethod
    def _fall_back(
        request: SpeechRequest,
        failed: PreparedRequest,
        following: PreparedRequest,
        exc: Exception,
        reason: str,
    ) -> None:
        """Count and log that ``following`` speaks because ``failed`` raised ``exc``."""
        FALLBACKS.labels(failed.provider.name, following.provider.name, type(exc).__name__).inc()
        log.warning(
            "request %s: %s did not speak (%s); %s speaks instead",
            request.id,
            failed.provider.name,
            reason,
            following.provider.name,
        )

    async def settle(self) -> None:
        """Returns once the audio made so far is stored in the cache (a cache only this
        process reads stores it just after it is handed on) and every hit is recorded."""
        if isinstance(self._cache, HotCache):
            await self._cache.settle()

    async def aclose(self) -> None:
        if self.remote is not None:
            await self.remote.aclose()
        await self.stream_encoders.aclose()
        await self.transcoder.aclose()
        await self.registry.aclose()
        await self.dispatcher.aclose()
        if self._cache is not None:
            await self.settle()
            self._cache.close()
            self._cache = None


def _pieces_label(voice: Voice) -> str:
    """What a voice's PCM pieces learn their gain under (:meth:`SpeechPipeline._job`)."""
    return f"{voice.label} (pieces)"


def _put_whole(live: LiveUtterance, encoded: EncodedAudio) -> None:
    """Audio made whole (a provider that does not stream, a fallback) into ``live``: its Opus
    packets, or its PCM in one piece."""
    if encoded.spec.muxer == "wav":
        live.sample_rate, pcm = wav_pcm(encoded.data)
        live.put(pcm)
        return
    for packet in opus_packets(encoded.data):
        live.put(packet)


def _live_fell_back(
    speech: Utterance | LiveUtterance | None, asked: PreparedRequest
) -> Voice | None:
    """The voice that said a finished live sentence instead of ``asked``'s, if another did."""
    if not isinstance(speech, LiveUtterance):
        return None
    said = speech.outcome()
    if said is not None and said.fallbacks and said.voice != asked.voice:
        return said.voice
    return None


async def _cancel_all(tasks: dict[int, asyncio.Task[Utterance | LiveUtterance]]) -> None:
    """Cancel the sentences under way (and the live ones they started); empties ``tasks``."""
    for task in tasks.values():
        task.cancel()
    for result in await asyncio.gather(*tasks.values(), return_exceptions=True):
        if isinstance(result, LiveUtterance):
            result.cancel()
    tasks.clear()


def _described(dispatched: Dispatched) -> str:
    """What a provider sent, for an error: size, claimed encoding and first bytes."""
    data = b"".join(c.data for c in dispatched.chunks)
    kind = dispatched.chunks[0].encoding.value if dispatched.chunks else "no"
    return f"sent {len(data):,} bytes of {kind} audio (beginning {data[:12]!r})"


def _count(request: SpeechRequest, provider: str, outcome: str) -> None:
    REQUESTS.labels(source=request.source.value, provider=provider, outcome=outcome).inc()


def _count_shared(
    request: SpeechRequest, provider: str, synthesis: asyncio.Task[Utterance]
) -> None:
    """Count ``request`` (asked of ``provider``), which read another's live ``synthesis``, once
    it ended: ``cached`` (no call of its own) when it spoke, else as it failed."""
    if synthesis.cancelled():
        return
    error = synthesis.exception()
    if error is None:
        _count(request, synthesis.result().voice.provider, "cached")
    elif isinstance(error, OyezError):
        outcome = "expired" if isinstance(error, RequestExpired) else "failed"
        _count(request, provider, outcome)


def _cache_entry(
    key: str, profile: OutputProfile, encoded: EncodedAudio, voice: Voice
) -> CacheEntry:
    return CacheEntry(
        key,
        encoded.data,
        profile,
        encoded.spec.sample_rate,
        encoded.spec.channels,
        encoded.duration_s,
        encoded.loudness.integrated_lufs,
        voice,
    )


def _sentence_parts(prepared: PreparedRequest, sentences: list[str]) -> list[PreparedRequest]:
    """One prepared request per sentence of ``prepared``'s text (prepared already: the text
    was), ids ``<id>.<index>``; only the first keeps the expiry."""
    whole = prepared.request
    return [
        replace(
            prepared,
            request=whole.model_copy(
                update={"text": text, "id": f"{whole.id}.{i}"} | ({"expires_at": None} if i else {})
            ),
            text=text,
        )
        for i, text in enumerate(sentences)
    ]
