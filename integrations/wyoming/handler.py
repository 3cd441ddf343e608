"""One Wyoming connection: ``describe``, ``synthesize`` and streamed text, through the pipeline.

Events (the ``wyoming`` package's README, "Text to Speech"; wyoming-piper's handler for what
Home Assistant expects):

- ``describe`` → ``info`` from the warm :class:`~integrations.wyoming.voices.VoiceCatalogue`.
- ``synthesize`` → ``audio-start``, ``audio-chunk`` s (PCM s16le, mono, the audio's rate),
  ``audio-stop``; a long text sentence by sentence, each sent as soon as it is made.
- ``synthesize-start``, ``synthesize-chunk`` s, ``synthesize-stop`` → per complete sentence
  ``audio-start``, chunks, ``audio-stop``, then ``synthesize-stopped``. The plain ``synthesize``
  a client sends inside a stream (for servers without streaming) is ignored.
- Any failure → ``error`` (``text``: what was wrong, secrets masked; ``code``: the error's
  class name, ``InvalidEvent`` for a malformed event), and the connection stays usable. Home
  Assistant's client (wyoming 1.5.4) has no use for ``error`` and waits for audio until the
  connection closes, so a connection that stays silent for :data:`ERROR_LINGER_S` after an
  error is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from bot import __version__
from bot.audio.live import LiveUtterance
from bot.audio.transcode import wav_pcm
from bot.errors import InvalidRequest, OyezError, UnknownVoice
from bot.ops.logs import mask_secrets
from bot.ops.metrics import TIME_TO_FIRST_AUDIO
from bot.speech import OutputProfile, RequestSource, SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.sentences import split_sentences
from integrations.wyoming.voices import VoiceCatalogue

__all__ = ["ERROR_LINGER_S", "OyezEventHandler", "WyomingSpeaker", "write_events"]

log = logging.getLogger(__name__)

#: Seconds a connection may stay silent after an error before it is closed.
ERROR_LINGER_S = 2.0
#: Samples per ``audio-chunk`` (about 43 ms at 48 kHz).
SAMPLES_PER_CHUNK = 2048
_WIDTH, _CHANNELS = 2, 1

Send = Callable[[Sequence[Event]], Awaitable[None]]


class _Gathered:
    """Stands in for a ``StreamWriter`` to ``async_write_event``, gathering what it writes so that
    a sentence's events go out in one write (each event's own write is a system call: ~0.4 ms
    for a sentence's ~25 chunks)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def writelines(self, data: Sequence[bytes]) -> None:
        self.parts.extend(data)

    async def drain(self) -> None:
        pass


async def write_events(events: Sequence[Event], writer: asyncio.StreamWriter) -> None:
    """``events`` framed by the ``wyoming`` package (``async_write_event``), sent in one write;
    raises ``ConnectionError`` when the peer is gone."""
    gathered = _Gathered()
    for event in events:
        await async_write_event(event, gathered)  # type: ignore[arg-type]  # its write calls only
    writer.write(b"".join(gathered.parts))
    await writer.drain()


class WyomingSpeaker:
    """Turns Wyoming requests into pipeline requests and their audio into events; shared by
    every connection."""

    def __init__(
        self, pipeline: SpeechPipeline, catalogue: VoiceCatalogue, *, stream_pieces: bool = False
    ) -> None:
        self.pipeline = pipeline
        self.catalogue = catalogue
        self.stream_pieces = stream_pieces
        self.streaming_voice: str | None = None  # the label of the voice made ready to stream

    async def prepare_streaming(self) -> None:
        """Make the default voice ready to stream within a sentence
        (:meth:`Provider.prepare_streaming`), in the background: until then, and for a voice
        that cannot, sentences go whole. A failure is logged, never raised."""
        try:
            prepared = await self.pipeline.prepare(self.request("ready", None, "wyoming:start"))
            if await prepared.provider.prepare_streaming(prepared.voice):
                self.streaming_voice = prepared.voice.label
                log.info("wyoming: %s streams within a sentence", prepared.voice.label)
        except OyezError as exc:
            log.warning("wyoming: sentences go whole, the voice cannot stream: %s", exc)

    def info(self) -> Event:
        return self.catalogue.info(__version__).event()

    def voice_fields(self, voice: SynthesizeVoice | None) -> dict[str, Any]:
        """``SpeechRequest`` fields for a Wyoming voice: one of ``describe``'s names, a label
        ``provider/[model/]voice`` not listed (yet), or a language (the default provider's
        voice when it speaks it). Raises :class:`UnknownVoice` for another name and
        :class:`InvalidRequest` when no voice speaks the language."""
        if voice is None or (voice.name is None and voice.language is None):
            return {}
        if voice.name is not None:
            choice = self.catalogue.get(voice.name)
            if choice is not None and choice.named:
                return {"voice": choice.name}
            if choice is not None:
                return {"provider": choice.provider, "model": choice.model, "voice": choice.voice}
            parts = voice.name.split("/", 2)
            if len(parts) == 3:
                return {"provider": parts[0], "model": parts[1], "voice": parts[2]}
            if len(parts) == 2:
                return {"provider": parts[0], "voice": parts[1]}
            raise UnknownVoice(voice.name, [c.name for c in self.catalogue.choices])
        assert voice.language is not None
        prefer = self.pipeline.settings.default_provider
        choice = self.catalogue.for_language(voice.language, prefer)
        if choice is None:
            raise InvalidRequest(f"no voice speaks language {voice.language!r}")
        return self.voice_fields(SynthesizeVoice(name=choice.name))

    def request(self, text: str, voice: SynthesizeVoice | None, requester: str) -> SpeechRequest:
        """Raises :class:`InvalidRequest` naming what is wrong."""
        return SpeechRequest.build(
            text=text,
            output=OutputProfile.WAV,
            source=RequestSource.WYOMING,
            requester=requester,
            **self.voice_fields(voice),
        )

    async def say(self, request: SpeechRequest, send: Send) -> None:
        """Speak ``request`` sentence by sentence: ``audio-start`` once the first is made, its
        chunks, the next sentences' chunks as each is made (each sentence's events one
        ``send``; a sentence streamed within itself, each piece's), ``audio-stop``. Raises what
        the pipeline raises (before ``audio-start`` or, for a later sentence, after some
        chunks)."""
        arrived = time.perf_counter()
        rate: int | None = None  # once audio-start went out

        async def out(pcm: bytes, pcm_rate: int) -> None:
            nonlocal rate
            events = []
            first = rate is None
            if rate is None:
                rate = pcm_rate
                events.append(AudioStart(rate=rate, width=_WIDTH, channels=_CHANNELS).event())
            elif pcm_rate != rate:  # one voice speaks a text: never seen
                raise InvalidRequest(f"the audio changed rate midway ({rate}, {pcm_rate} Hz)")
            step = SAMPLES_PER_CHUNK * _WIDTH * _CHANNELS
            for at in range(0, len(pcm), step):
                chunk = AudioChunk(
                    rate=rate, width=_WIDTH, channels=_CHANNELS, audio=pcm[at : at + step]
                )
                events.append(chunk.event())
            await send(events)
            if first:
                TIME_TO_FIRST_AUDIO.labels(sink="wyoming").observe(time.perf_counter() - arrived)

        segments = self.pipeline.speak_sentences(request, live=self.stream_pieces)
        async for segment in segments:
            speech = segment.speech
            if isinstance(speech, LiveUtterance):
                async for piece in speech.packets():
                    assert speech.sample_rate is not None  # set before its first piece
                    await out(piece, speech.sample_rate)
            else:
                whole_rate, pcm = wav_pcm(speech.audio)
                await out(pcm, whole_rate)
        await send([AudioStop().event()])


class _TextStream:
    """The text of one ``synthesize-start`` … ``synthesize-stop``: each sentence is spoken
    (in order, by one task) as soon as the text after it shows that it is complete."""

    def __init__(self, handler: OyezEventHandler, voice: SynthesizeVoice | None) -> None:
        self.handler = handler
        self.voice = voice
        self._text = ""
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._speak(), name="oyez-wyoming-stream")

    def add(self, text: str) -> None:
        self._text += text
        sentences = split_sentences(" ".join(self._text.split()))
        if len(sentences) < 2:
            return  # the last one may go on: only a following word shows a sentence ended
        for sentence in sentences[:-1]:
            self._sentences.put_nowait(sentence)
        self._text = sentences[-1]

    async def finish(self) -> None:
        """Speak what is left and wait until everything was sent."""
        rest = " ".join(self._text.split())
        if rest:
            self._sentences.put_nowait(rest)
        self._sentences.put_nowait(None)
        await self._task

    def cancel(self) -> None:
        self._task.cancel()

    async def _speak(self) -> None:
        while (sentence := await self._sentences.get()) is not None:
            if not await self.handler.speak(sentence, self.voice):
                return  # the error was sent; the rest of the stream is not spoken


class OyezEventHandler(AsyncEventHandler):
    """Handles the events of one connection (see the module's docstring)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, speaker: WyomingSpeaker
    ) -> None:
        super().__init__(reader, writer)
        self.speaker = speaker
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "local"
        self._stream: _TextStream | None = None
        self._failed = False

    async def run(self) -> None:
        """The base class's loop, but a connection silent for :data:`ERROR_LINGER_S` after an
        error is closed (see the module's docstring)."""
        try:
            while True:
                try:
                    async with asyncio.timeout(ERROR_LINGER_S if self._failed else None):
                        event = await async_read_event(self.reader)
                except TimeoutError:
                    log.debug("wyoming: closing %s's connection after an error", self.peer)
                    break
                if event is None or not await self.handle_event(event):
                    break
        finally:
            await self.disconnect()
            self.writer.close()

    async def disconnect(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None

    async def handle_event(self, event: Event) -> bool:
        self._failed = False
        try:
            await self._dispatch(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a malformed event
            log.warning("wyoming: %s sent a malformed %s event: %r", self.peer, event.type, exc)
            await self._fail(f"malformed {event.type} event: {exc!r}", "InvalidEvent")
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self.speaker.info())
        elif Synthesize.is_type(event.type):
            if self._stream is None:  # inside a stream it only repeats the text for old servers
                synthesize = Synthesize.from_event(event)
                await self.speak(synthesize.text, synthesize.voice)
        elif SynthesizeStart.is_type(event.type):
            if self._stream is not None:
                self._stream.cancel()
            self._stream = _TextStream(self, SynthesizeStart.from_event(event).voice)
        elif SynthesizeChunk.is_type(event.type):
            if self._stream is not None:
                self._stream.add(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            stream, self._stream = self._stream, None
            if stream is not None:
                await stream.finish()
            await self.write_event(SynthesizeStopped().event())
        else:
            log.debug(
                "wyoming: %s sent %s, which a TTS server does not take", self.peer, event.type
            )

    async def speak(self, text: str, voice: SynthesizeVoice | None) -> bool:
        """Speak ``text``; False when it failed (an ``error`` was sent instead)."""
        requester = f"wyoming:{self.peer}"
        try:
            request = self.speaker.request(text, voice, requester)
            log.info(
                "wyoming: %s asks for %d characters (voice %s)",
                self.peer,
                len(text),
                voice.name if voice is not None and voice.name else "default",
            )
            await self.speaker.say(request, self._write_events)
        except OyezError as exc:
            log.warning("wyoming: %s's request was not spoken: %s", self.peer, exc)
            await self._fail(mask_secrets(str(exc)), type(exc).__name__)
            return False
        except ConnectionError:
            log.info("wyoming: %s went away before its audio was sent", self.peer)
            return False
        except Exception as exc:
            log.exception("wyoming: %s's request failed", self.peer)
            await self._fail(f"internal error: {type(exc).__name__}", "InternalError")
            return False
        return True

    async def _write_events(self, events: Sequence[Event]) -> None:
        await write_events(events, self.writer)

    async def _fail(self, text: str, code: str) -> None:
        await self.write_event(Error(text=text, code=code).event())
        self._failed = True
