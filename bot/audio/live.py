"""Live audio: a provider's stream encoded to Ogg Opus as it arrives, for sinks that play at once.

:class:`OpusStreamEncoder` feeds the pieces to one ffmpeg (``discord`` profile, one Ogg page per
20 ms packet, flushed at once: packets come ~5 ms after their audio, the last ~65 ms at the end)
and keeps the whole output, which the cache stores. The integrated loudness is only known at the
end, so a stream gets the gain its voice needed last time (:class:`~bot.audio.transcode.VoiceGains`,
0 dB at first), then a limiter; a side meter teaches the next gain. :class:`LiveUtterance` is
what a sink gets: the packets as they come, then the complete :class:`~bot.speech.Utterance`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from bot.audio import libav
from bot.audio.ogg import OggOpusReader
from bot.audio.transcode import (
    EncodedAudio,
    Loudness,
    PcmAudio,
    Transcoder,
    VoiceGains,
    ffmpeg_input_args,
    metered_graph,
    parse_ebur128,
    profile_spec,
    stderr_tail,
)
from bot.audio.wav import WavStreamReader
from bot.errors import AudioError, TranscodeError
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, Utterance, Voice

__all__ = [
    "FRAME_S",
    "STREAM_PROBE",
    "LiveUtterance",
    "OpusStreamEncoder",
    "PcmStreamEncoder",
    "StreamEncoders",
    "StreamFormat",
]

log = logging.getLogger(__name__)

#: What a PCM stream's libav errors say it failed doing.
_NORMALISING = "normalising the stream"

#: Seconds of audio in one Opus packet of the ``discord`` profile.
FRAME_S = 0.020
#: Voices that keep a started encoder waiting for their next stream.
SPARE_ENCODERS = 4
#: A waiting encoder whose gain is this close (dB) to the learned one is used as it is.
GAIN_TOLERANCE_DB = 0.5
#: How far (LU) a PCM stream normalised from its voice's last gain may land from the target
#: before the copy the cache keeps is normalised again (the goal: within 1 LU; whole
#: utterances are brought within :data:`~bot.audio.transcode.TOLERANCE_LU`).
STREAM_TOLERANCE_LU = 1.0


#: ffmpeg's input options for a stream: probe no more than its first frame (by default ffmpeg
#: reads over a second of an MP3 or AAC stream sent at the pace of playback before it decodes
#: any: bench/stream_start.py).
STREAM_PROBE: tuple[str, ...] = ("-probesize", "32", "-analyzeduration", "0")


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How a provider's stream is encoded: raw PCM needs ``sample_rate`` (Hz) and ``channels``."""

    encoding: AudioEncoding
    sample_rate: int
    channels: int

    @classmethod
    def of(cls, chunk: AudioChunk) -> StreamFormat:
        return cls(chunk.encoding, chunk.sample_rate, chunk.channels)


class OpusStreamEncoder:
    """One ffmpeg process turning a provider's stream into Ogg Opus while it arrives.

    ``on_packet`` gets each 20 ms Opus packet as ffmpeg writes it, on the event loop;
    ``gain_db`` goes before the limiter (None: neither). :meth:`start` may spawn ffmpeg ahead,
    in the expected format; a first piece in another one starts it again. Raises
    :class:`TranscodeError` when ffmpeg fails, :class:`AudioError` on a format change midway.
    """

    def __init__(
        self,
        transcoder: Transcoder,
        on_packet: Callable[[bytes], None],
        *,
        gain_db: float | None,
    ) -> None:
        self.transcoder = transcoder
        self.on_packet = on_packet
        self.gain_db = gain_db
        self.format: StreamFormat | None = None
        self.fed_bytes = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[bytes] | None = None
        self._ogg = bytearray()
        self._ogg_reader = OggOpusReader()
        self._wav: WavStreamReader | None = None

    @property
    def fed(self) -> bool:
        """Whether any audio went in (after that, the stream cannot change hands)."""
        return self.fed_bytes > 0

    @property
    def running(self) -> bool:
        """Whether ffmpeg is started and has not ended."""
        return self._process is not None and self._process.returncode is None

    def _args(self, stream: StreamFormat) -> list[str]:
        settings = self.transcoder.settings
        spec = profile_spec(OutputProfile.OGG_OPUS, settings)
        limit = self.gain_db is not None
        return [
            self.transcoder.ffmpeg,
            *("-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"),
            *STREAM_PROBE,
            *ffmpeg_input_args(stream.encoding, stream.sample_rate, stream.channels),
            "-i",
            "pipe:0",
            "-filter_complex",
            metered_graph(self.gain_db, settings.true_peak_dbtp, limit=limit, canonical=True),
            *("-map", "[out]", *spec.output_args()),
            # one page per packet, written at once: ogg's default page lasts a second
            *("-page_duration", "20000", "-flush_packets", "1", "pipe:1"),
        ]

    async def start(self, expected: StreamFormat) -> None:
        """Spawn ffmpeg for a stream in ``expected`` (ahead of its first piece)."""
        if self._process is not None:
            return
        self.format = expected
        self._process = await asyncio.create_subprocess_exec(
            *self._args(expected),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._reader = asyncio.create_task(
            self._read(self._process.stdout), name="oyez-opus-encoder-out"
        )
        self._stderr = asyncio.create_task(
            self._process.stderr.read(), name="oyez-opus-encoder-err"
        )

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while data := await stdout.read(65_536):
            self._ogg += data
            for packet in self._ogg_reader.feed(data):
                self.on_packet(packet)

    async def feed(self, chunk: AudioChunk) -> None:
        """Encode ``chunk``; returns once ffmpeg has taken it. A WAV stream goes in as the raw
        PCM its header describes (:class:`~bot.audio.wav.WavStreamReader`: ffmpeg's WAV
        demuxer would read 64 KiB of it before the first packet)."""
        if chunk.encoding is AudioEncoding.WAV:
            if self._wav is None:
                self._wav = WavStreamReader()
            unwrapped = self._wav.feed(chunk.data)
            if unwrapped is None:
                return  # the header is still coming
            chunk = unwrapped
        await self._encode(chunk)

    async def _encode(self, chunk: AudioChunk) -> None:
        """``chunk`` to ffmpeg (started, or started again, for its format)."""
        if not chunk.data:
            return
        wanted = StreamFormat.of(chunk)
        if self.format != wanted:
            if self.fed:
                raise AudioError(f"the stream changed format midway ({self.format} then {wanted})")
            await self.abort()  # spawned for the format it was expected in: start again
        await self.start(wanted)
        process = self._process
        assert process is not None
        assert process.stdin is not None
        try:
            process.stdin.write(chunk.data)
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self._failed("ffmpeg stopped reading the stream")
        self.fed_bytes += len(chunk.data)

    async def finish(self) -> EncodedAudio:
        """Close the stream and wait for the last packets; the whole Ogg Opus and its loudness.

        Raises :class:`AudioError` when no audio came, :class:`TranscodeError` when ffmpeg
        fails or takes longer than ``audio.ffmpeg_timeout_s``.
        """
        process = self._process
        if process is None or not self.fed:
            await self.abort()
            raise AudioError("the provider returned no audio")
        assert process.stdin is not None
        assert self._reader is not None
        assert self._stderr is not None
        process.stdin.close()
        timeout = self.transcoder.settings.ffmpeg_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._reader
                stderr = await self._stderr
                await process.wait()
        except TimeoutError:
            await self.abort()
            raise TranscodeError(
                f"ffmpeg did not finish encoding the stream within {timeout:g} s",
                returncode=None,
                stderr_tail="",
            ) from None
        if process.returncode != 0:
            raise TranscodeError(
                f"ffmpeg failed encoding the stream (exit status {process.returncode})",
                returncode=process.returncode,
                stderr_tail=stderr_tail(stderr),
            )
        spec = profile_spec(OutputProfile.OGG_OPUS, self.transcoder.settings)
        loudness = parse_ebur128(stderr)
        duration = self._ogg_reader.duration_s
        return EncodedAudio(bytes(self._ogg), spec, duration, loudness, self.gain_db)

    async def _failed(self, what: str) -> None:
        stderr = b""
        if self._stderr is not None and self._process is not None:
            self._process.kill()
            with contextlib.suppress(Exception):
                stderr = await asyncio.wait_for(self._stderr, 5)
        await self.abort()
        raise TranscodeError(what, returncode=None, stderr_tail=stderr_tail(stderr))

    async def abort(self) -> None:
        """Stop ffmpeg and forget the stream (safe to call more than once)."""
        process, self._process = self._process, None
        tasks = [t for t in (self._reader, self._stderr) if t is not None]
        self._reader = self._stderr = None
        self.format = None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        for task in tasks:
            task.cancel()
        if process is not None:
            with contextlib.suppress(Exception):
                await process.wait()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class _Synthesis:
    """One live synthesis as every reader of it sees it (:meth:`LiveUtterance.follow`): what
    was handed on (kept for a reader who joins late, until no one can join: the synthesis
    ended), each reader's queue, and how many readers still want it."""

    __slots__ = (
        "ended",
        "history",
        "put_count",
        "put_s",
        "queues",
        "readers",
        "sample_rate",
        "task",
    )

    def __init__(self) -> None:
        self.ended = False
        self.history: list[bytes] | None = []
        self.put_count = 0
        self.put_s = 0.0
        self.queues: list[asyncio.Queue[bytes | None]] = []
        self.readers = 0
        self.sample_rate: int | None = None
        self.task: asyncio.Task[Utterance] | None = None

    def done(self, _task: asyncio.Task[Utterance]) -> None:
        self.history = None  # no reader joins a synthesis that is over
        for queue in self.queues:
            queue.put_nowait(None)


class LiveUtterance:
    """Speech still being synthesized: its audio as it is encoded, then the complete
    :class:`Utterance` (also cached): for the ``discord`` profile Opus packets of 20 ms (the
    utterance Ogg Opus), for ``wav`` pieces of PCM s16le mono at :attr:`sample_rate` Hz (set
    before the first piece; the utterance a WAV file).

    ``voice`` is the voice asked for (a fallback voice may speak instead when the asked one
    fails, before any audio or with its stream broken off; the result says which spoke).
    :meth:`packets` is for one consumer and yields every packet from the first; when synthesis
    fails it raises the error after the packets that did come. More requests of the same audio
    read the same synthesis (:meth:`follow`). :meth:`cancel` stops synthesis once every reader
    of it has cancelled.
    """

    def __init__(
        self, request_id: str, text: str, voice: Voice, *, _of: LiveUtterance | None = None
    ) -> None:
        self.request_id = request_id
        self.text = text
        self.voice = voice
        #: The request whose synthesis this reader follows (None: its own).
        self.follows: str | None = None
        synthesis = _Synthesis()
        if _of is not None:
            self.follows, synthesis = _of.follows or _of.request_id, _of._synthesis
        self._synthesis: _Synthesis = synthesis
        self._cancelled = False
        self._packets: asyncio.Queue[bytes | None] = asyncio.Queue()
        for packet in synthesis.history or ():
            self._packets.put_nowait(packet)
        if synthesis.ended:
            self._packets.put_nowait(None)
        synthesis.queues.append(self._packets)
        synthesis.readers += 1

    @property
    def sample_rate(self) -> int | None:
        """Hz of the PCM pieces (``wav``); None for Opus packets, or before the first piece."""
        return self._synthesis.sample_rate

    @sample_rate.setter
    def sample_rate(self, rate: int | None) -> None:
        self._synthesis.sample_rate = rate

    @property
    def put_count(self) -> int:
        """Packets (pieces) handed on so far."""
        return self._synthesis.put_count

    @property
    def put_s(self) -> float:
        """Seconds of audio handed on so far."""
        return self._synthesis.put_s

    def put(self, packet: bytes) -> None:
        """Hand on one Opus packet, or a piece of PCM once :attr:`sample_rate` is set (called by
        the pipeline), to every reader."""
        synthesis = self._synthesis
        synthesis.put_count += 1
        rate = synthesis.sample_rate
        synthesis.put_s += FRAME_S if rate is None else len(packet) / (2 * rate)
        if synthesis.history is not None:
            synthesis.history.append(packet)
        for queue in synthesis.queues:
            queue.put_nowait(packet)

    def end(self) -> None:
        """All the audio is out (called by the pipeline): :meth:`packets` ends now, while the
        utterance is still being finished (:meth:`result`)."""
        synthesis = self._synthesis
        if not synthesis.ended:
            synthesis.ended = True
            for queue in synthesis.queues:
                queue.put_nowait(None)

    def attach(self, synthesis: asyncio.Task[Utterance]) -> None:
        """Attach the task that synthesizes and puts the packets (called by the pipeline)."""
        self._synthesis.task = synthesis
        synthesis.add_done_callback(self._synthesis.done)

    def follow(self, request_id: str) -> LiveUtterance | None:
        """Another reader of this synthesis, for request ``request_id`` (the same audio asked
        again while it is made): its :meth:`packets` start from the first, its :meth:`result`
        is this one's under its own request id, from no provider call of its own (``cached``,
        no cost). None once the synthesis is over or every reader cancelled it."""
        synthesis = self._synthesis
        if synthesis.task is None or synthesis.history is None or synthesis.readers <= 0:
            return None
        return LiveUtterance(request_id, self.text, self.voice, _of=self)

    def add_done_callback(self, callback: Callable[[asyncio.Task[Utterance]], object]) -> None:
        """``callback(task)`` once the synthesis task ends (at once if it has)."""
        assert self._synthesis.task is not None, "LiveUtterance.attach was never called"
        self._synthesis.task.add_done_callback(callback)

    async def packets(self) -> AsyncIterator[bytes]:
        """Every packet (piece of PCM), in order, as it is encoded. Raises what synthesis
        raised before the audio was all out (:meth:`end`)."""
        while (packet := await self._packets.get()) is not None:
            yield packet
        if not self._synthesis.ended:
            await self.result()  # raises the failure, if any

    def _own(self, utterance: Utterance) -> Utterance:
        """``utterance`` as this reader's: a follower's has its request id, no call, no cost."""
        if self.follows is None:
            return utterance
        return replace(utterance, request_id=self.request_id, cached=True, cost_usd=None)

    async def result(self) -> Utterance:
        """The complete utterance, once synthesis and encoding are done."""
        task = self._synthesis.task
        assert task is not None, "LiveUtterance.attach was never called"
        return self._own(await asyncio.shield(task))

    def outcome(self) -> Utterance | None:
        """The complete utterance if synthesis has ended well, else None (still running,
        failed or cancelled)."""
        task = self._synthesis.task
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return self._own(task.result())

    def cancel(self) -> None:
        """This reader wants no more of it; the synthesis stops when no reader does."""
        synthesis = self._synthesis
        if self._cancelled:
            return
        self._cancelled = True
        synthesis.readers -= 1
        if synthesis.readers <= 0 and synthesis.task is not None:
            synthesis.task.cancel()


class PcmStreamEncoder:
    """A provider's stream of PCM s16le mono normalised as it arrives, for sinks that play PCM
    (Wyoming): the gain its voice needed last time (``gain_db``; None: normalisation is off),
    then the limiter, in one libav graph (:class:`~bot.audio.libav.GainStream`, in a worker
    thread); each piece's samples go to ``live`` as they come out. :meth:`finish` ends
    ``live``'s audio, then gives the whole as WAV; when its loudness missed the target by more
    than :data:`STREAM_TOLERANCE_LU`, the WAV (what the cache keeps, and the gain the voice
    learns) is normalised again from what arrived, in full. Raises :class:`AudioError` for a
    stream that is not PCM s16le mono or changes rate, :class:`TranscodeError` when libav
    fails."""

    def __init__(self, transcoder: Transcoder, live: LiveUtterance, gain_db: float | None) -> None:
        self.transcoder = transcoder
        self.live = live
        self.gain_db = gain_db
        self.fed_bytes = 0
        self._raw: list[bytes] = []
        self._out: list[bytes] = []
        self._stream: libav.GainStream | None = None

    @property
    def fed(self) -> bool:
        """Whether any audio went in (after that, the stream cannot change hands)."""
        return self.fed_bytes > 0

    def _open(self, rate: int) -> libav.GainStream:
        settings = self.transcoder.settings
        if self.gain_db is None:
            return libav.GainStream(rate, 0.0, None)
        return libav.GainStream(rate, self.gain_db, settings.true_peak_dbtp)

    async def feed(self, chunk: AudioChunk) -> None:
        """Normalise ``chunk`` and hand on what came out."""
        if not chunk.data:
            return
        if (chunk.encoding, chunk.channels) != (
            AudioEncoding.PCM_S16LE,
            1,
        ) or chunk.sample_rate <= 0:
            raise AudioError(
                f"a PCM stream is s16le mono: not {chunk.encoding.value}, {chunk.channels} "
                f"channel(s) at {chunk.sample_rate} Hz"
            )
        if self._stream is None:
            self._stream = await self.transcoder.in_process(
                self._open, chunk.sample_rate, what=_NORMALISING
            )
            self.live.sample_rate = chunk.sample_rate
        elif chunk.sample_rate != self._stream.sample_rate:
            raise AudioError(
                f"the stream changed rate midway ({self._stream.sample_rate} then "
                f"{chunk.sample_rate} Hz)"
            )
        self._raw.append(chunk.data)
        self.fed_bytes += len(chunk.data)
        out = await self.transcoder.in_process(self._stream.push, chunk.data, what=_NORMALISING)
        if out:
            self._out.append(out)
            self.live.put(out)

    async def finish(self) -> EncodedAudio:
        """The rest handed on; the whole as WAV, with its loudness and the gain it got.
        Raises :class:`AudioError` when no audio came."""
        stream = self._stream
        if stream is None:
            raise AudioError("the provider returned no audio")
        metered = await self.transcoder.in_process(stream.close, what=_NORMALISING)
        if metered.data:
            self._out.append(metered.data)
            self.live.put(metered.data)
        self.live.end()  # the sink is done with it: the rest is for the cache
        rate = stream.sample_rate
        settings = self.transcoder.settings
        level = Loudness(metered.integrated_lufs, metered.true_peak_dbtp)
        missed = abs(settings.loudness_target_lufs - level.integrated_lufs) > STREAM_TOLERANCE_LU
        if self.gain_db is not None and missed and not level.is_silent:
            raw = AudioChunk(b"".join(self._raw), AudioEncoding.PCM_S16LE, rate, 1)
            return await self.transcoder.transcode([raw], OutputProfile.WAV, gain_db=self.gain_db)
        pcm = PcmAudio(b"".join(self._out), rate, 1, level)
        encoded = await self.transcoder.encode(pcm, OutputProfile.WAV)
        return replace(encoded, gain_db=self.gain_db)


def _ignore(packet: bytes) -> None:
    """Where a spare encoder's packets would go: it gets none before it is taken."""


class StreamEncoders:
    """The encoders of live streams, and what they learn per voice label.

    A stream gets the gain learned from its voice's last utterance (``gains``; 0 dB at first;
    None with ``audio.normalize_loudness`` off). Once a voice has streamed, a started encoder
    waits for its next stream (ffmpeg takes ~25 ms to start on 2 cores, more than a fast
    provider's first audio): at most :data:`SPARE_ENCODERS` voices keep one, used as it is
    when its gain is within :data:`GAIN_TOLERANCE_DB` of the learned one.
    """

    def __init__(self, transcoder: Transcoder, gains: VoiceGains) -> None:
        self.transcoder = transcoder
        self.gains = gains
        self._formats: dict[str, StreamFormat] = {}
        self._spares: dict[str, OpusStreamEncoder] = {}
        self._starting: set[asyncio.Task[None]] = set()

    def gain_db(self, voice: Voice) -> float | None:
        if not self.transcoder.settings.normalize_loudness:
            return None
        return self.gains.get(voice.label) or 0.0

    def _fits(self, spare: OpusStreamEncoder, voice: Voice) -> bool:
        gain = self.gain_db(voice)
        if spare.gain_db is None or gain is None:
            return spare.gain_db == gain
        return abs(spare.gain_db - gain) <= GAIN_TOLERANCE_DB

    async def take(self, voice: Voice, on_packet: Callable[[bytes], None]) -> OpusStreamEncoder:
        """An encoder for a stream of ``voice`` whose packets go to ``on_packet``: the waiting
        one if it fits, else a new one (started at once when the voice's format is known)."""
        spare = self._spares.pop(voice.label, None)
        if spare is not None and spare.running and self._fits(spare, voice):
            spare.on_packet = on_packet
            return spare
        if spare is not None:
            await spare.abort()
        encoder = OpusStreamEncoder(self.transcoder, on_packet, gain_db=self.gain_db(voice))
        expected = self._formats.get(voice.label)
        if expected is not None:  # spawned while the provider is asked
            await encoder.start(expected)
        return encoder

    @contextlib.asynccontextmanager
    async def lease(
        self, voice: Voice, on_packet: Callable[[bytes], None]
    ) -> AsyncIterator[OpusStreamEncoder]:
        """:meth:`take` an encoder for one stream of ``voice``; when the block fails it is
        aborted, and either way a spare is started for the voice's next stream."""
        encoder = await self.take(voice, on_packet)
        try:
            yield encoder
        except BaseException:
            await encoder.abort()
            raise
        finally:
            self.replenish(voice)

    async def feed(self, voice: Voice, encoder: OpusStreamEncoder, chunk: AudioChunk) -> None:
        """Feed ``chunk`` of ``voice``'s stream to ``encoder``, noting the voice's format."""
        await encoder.feed(chunk)
        if encoder.format is not None:
            self._formats[voice.label] = encoder.format

    def replenish(self, voice: Voice) -> None:
        """Start, in the background, an encoder for ``voice``'s next stream (once a stream of
        it has ended: forking ffmpeg during one would hold up its first packets)."""
        expected = self._formats.get(voice.label)
        spare = self._spares.get(voice.label)
        if expected is None or (spare is not None and spare.running and self._fits(spare, voice)):
            return
        task = asyncio.create_task(self._spare(voice, expected), name="oyez-spare-encoder")
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _spare(self, voice: Voice, expected: StreamFormat) -> None:
        spare = OpusStreamEncoder(self.transcoder, _ignore, gain_db=self.gain_db(voice))
        try:
            await spare.start(expected)
        except Exception:
            log.warning("no spare encoder for %s", voice.label, exc_info=True)
            await spare.abort()
            return
        replaced = self._spares.pop(voice.label, None)
        self._spares[voice.label] = spare
        stale = list(self._spares)[:-SPARE_ENCODERS]
        for old in [replaced, *(self._spares.pop(label) for label in stale)]:
            if old is not None:
                await old.abort()

    async def aclose(self) -> None:
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            await spare.abort()
