"""libav in this process (PyAV): EBU R128 loudness, gain, peak limiting and encoding of PCM.

These are the filters and encoders the ffmpeg command runs (``aresample``, ``volume``,
``alimiter``, ``ebur128``; libopus, libmp3lame), with no subprocess: normalisation measures
what its limiter did and corrects the gain before anything is encoded, and the encoding needs
no ffmpeg run either (issue #16; ``bench/transcode.py`` measures this against one and two ffmpeg
runs). Every function here blocks for a few milliseconds per second of audio: call it in a
worker thread. Errors are ``av.FFmpegError``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING

from bot.speech import AudioEncoding

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame

__all__ = [
    "GainStream",
    "Metered",
    "decoded",
    "encodable",
    "encode",
    "gain_key",
    "gained",
    "in_process",
    "metered",
    "resampled",
    "warm_up",
]

# PyAV's sample format and the byte width per raw PCM encoding it takes as it is.
_SAMPLE_FORMATS = {AudioEncoding.PCM_S16LE: ("s16", 2), AudioEncoding.PCM_F32LE: ("flt", 4)}
_LAYOUTS = {1: "mono", 2: "stereo"}
# ebur128's integrated loudness before its first 400 ms block: its gate, "silence".
_NO_MEASUREMENT_LUFS = -70.0
# Samples per frame pushed into a graph: 100 ms at 48 kHz; the meter reports per 100 ms anyway.
_FRAME_SAMPLES = 4800


@dataclass(frozen=True, slots=True)
class Metered:
    """PCM s16le at ``sample_rate`` Hz, mono, with its integrated loudness (LUFS) and true peak
    (dBTP) as ``ebur128=peak=true`` measures them."""

    data: bytes
    sample_rate: int
    integrated_lufs: float
    true_peak_dbtp: float


def warm_up() -> None:
    """Import PyAV, its filters and its frames now rather than with the first utterance."""
    import av.filter
    from av.audio.frame import AudioFrame

    del av, AudioFrame  # imported for their cost, now


def in_process(encoding: AudioEncoding, sample_rate: int, channels: int) -> bool:
    """Whether raw audio in this shape can be read here (else ffmpeg decodes it)."""
    return encoding in _SAMPLE_FORMATS and channels in _LAYOUTS and sample_rate > 0


def _frames(
    data: bytes, encoding: AudioEncoding, sample_rate: int, channels: int, first: int = 0
) -> list[AudioFrame]:
    """``data`` in frames of :data:`_FRAME_SAMPLES`, their pts counted from sample ``first``."""
    from av.audio.frame import AudioFrame

    fmt, width = _SAMPLE_FORMATS[encoding]
    frame_bytes = width * channels  # packed: one frame's samples, interleaved
    step = _FRAME_SAMPLES * frame_bytes
    whole = len(data) // frame_bytes * frame_bytes  # a torn last sample is dropped
    frames = []
    for start in range(0, whole, step):
        piece = data[start : min(start + step, whole)]
        frame = AudioFrame(format=fmt, layout=_LAYOUTS[channels], samples=len(piece) // frame_bytes)
        frame.planes[0].update(piece)
        frame.sample_rate = sample_rate
        frame.pts = first + start // frame_bytes
        frame.time_base = Fraction(1, sample_rate)
        frames.append(frame)
    return frames


class _Metering:
    """One graph: audio in PyAV's ``source`` shape (sample format, rate in Hz, channel layout)
    through ``chain``, then out as s16 mono at the rate the chain ends at, metered by
    ``ebur128`` (its peak the true peak, or with ``true_peak`` False the sample peak: ~60 % of
    the meter's time is the true peak's 4× oversampling)."""

    def __init__(
        self, source: tuple[str, int, str], chain: Sequence[tuple[str, str]], *, true_peak: bool
    ) -> None:
        import av.filter

        fmt, sample_rate, layout = source
        self._graph = graph = av.filter.Graph()
        nodes = [
            graph.add_abuffer(
                format=fmt,
                sample_rate=sample_rate,
                layout=layout,
                time_base=Fraction(1, sample_rate),
            ),
            *(graph.add(name, args) for name, args in chain),
            # s16 before the meter: it measures what is encoded; after it, as ebur128 gives doubles
            graph.add("aformat", "sample_fmts=s16:channel_layouts=mono"),
            graph.add("ebur128", f"metadata=1:peak={'true' if true_peak else 'sample'}"),
            graph.add("aformat", "sample_fmts=s16:channel_layouts=mono"),
            graph.add("abuffersink"),
        ]
        graph.link_nodes(*nodes).configure()
        self.rate = sample_rate
        self._integrated, self._peak = _NO_MEASUREMENT_LUFS, 0.0
        self._peak_tag = "lavfi.r128.true_peak" if true_peak else "lavfi.r128.sample_peak"

    def push(self, frames: Sequence[AudioFrame | None]) -> bytes:
        """Put ``frames`` in (None: the end); the samples that came out (maybe none yet)."""
        import av

        out: list[bytes] = []
        for frame in frames:
            self._graph.push(frame)
            while True:
                try:
                    done = self._graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    break
                assert isinstance(done, av.AudioFrame)  # an audio graph gives audio
                out.append(bytes(done.planes[0])[: done.samples * 2])
                self.rate = done.sample_rate
                tags = done.metadata
                if "lavfi.r128.I" in tags:
                    self._integrated = float(tags["lavfi.r128.I"])
                    self._peak = max(self._peak, float(tags.get(self._peak_tag, 0.0)))
        return b"".join(out)

    def metered(self, data: bytes) -> Metered:
        """``data`` with what the meter measured of everything pushed."""
        peak_dbtp = 20 * math.log10(self._peak) if self._peak > 0 else -math.inf
        return Metered(data, self.rate, self._integrated, peak_dbtp)


def _run(
    frames: Sequence[AudioFrame],
    source: tuple[str, int, str],
    chain: Sequence[tuple[str, str]],
    *,
    true_peak: bool = True,
) -> Metered:
    """``frames`` through a :class:`_Metering` graph of ``source`` and ``chain``, whole."""
    metering = _Metering(source, chain, true_peak=true_peak)
    return metering.metered(metering.push([*frames, None]))


def _gain_chain(gain_db: float, ceiling_dbtp: float | None) -> list[tuple[str, str]]:
    """``gain_db`` and, with a ``ceiling_dbtp``, the limiter
    :func:`bot.audio.transcode.metered_graph` uses."""
    chain = [("volume", f"{gain_db:.2f}dB")]
    if ceiling_dbtp is not None:
        ceiling = 10 ** (ceiling_dbtp / 20)
        chain.append(("alimiter", f"limit={ceiling:.4f}:attack=5:release=50:level=false"))
    return chain


def gain_key(gain_db: float, ceiling_dbtp: float | None) -> str:
    """What tells one gain graph from another (:class:`GainStream`, :func:`gained`): its
    filters' arguments, as libav gets them."""
    return ";".join(f"{name}={args}" for name, args in _gain_chain(gain_db, ceiling_dbtp))


class GainStream:
    """PCM s16le mono at ``sample_rate`` Hz pushed in pieces through ``gain_db`` (dB) and, with
    a ``ceiling_dbtp``, the limiter :func:`gained` uses, then metered; what comes out is taken
    as it comes (the limiter holds back its 5 ms look-ahead until :meth:`close`). One graph for
    the whole stream, so its loudness is the whole's. Use it from one thread at a time; errors
    are ``av.FFmpegError``."""

    def __init__(self, sample_rate: int, gain_db: float, ceiling_dbtp: float | None) -> None:
        self.sample_rate = sample_rate
        source = ("s16", sample_rate, "mono")
        self._metering = _Metering(source, _gain_chain(gain_db, ceiling_dbtp), true_peak=False)
        self._pushed = 0  # samples
        self._torn = b""  # half a sample left over from the last piece

    def push(self, data: bytes) -> bytes:
        """Put ``data`` in; the processed samples that came out (maybe none yet)."""
        data = self._torn + data
        whole = len(data) // 2 * 2
        self._torn = data[whole:]
        frames = _frames(data[:whole], AudioEncoding.PCM_S16LE, self.sample_rate, 1, self._pushed)
        self._pushed += whole // 2
        return self._metering.push(frames)

    def close(self) -> Metered:
        """The rest of the samples, with the whole stream's integrated loudness and sample
        peak (the ``true_peak_dbtp`` of the result, as :func:`gained` with ``true_peak``
        False)."""
        return self._metering.metered(self._metering.push([None]))

    def through(self, data: bytes) -> Metered:
        """All of ``data`` pushed and the stream closed: what :func:`gained` with ``true_peak``
        False gives for it, from a graph built before (building one is ~0.7 ms of a ~2.5 ms
        pass over 3 s of Piper's speech)."""
        pushed = self.push(data)
        rest = self.close()
        return replace(rest, data=pushed + rest.data)


def _resampled(in_rate: int, out_rate: int | None) -> list[tuple[str, str]]:
    return [("aresample", str(out_rate))] if out_rate not in (None, in_rate) else []


def metered(
    data: bytes, encoding: AudioEncoding, sample_rate: int, channels: int, out_rate: int | None
) -> Metered:
    """Raw PCM (``in_process`` must allow its shape) as s16 mono at ``out_rate`` Hz (None: its
    own rate, not resampled) and measured. Raises ``av.FFmpegError`` if libavfilter refuses
    it."""
    frames = _frames(data, encoding, sample_rate, channels)
    chain = _resampled(sample_rate, out_rate)
    return _run(frames, (_SAMPLE_FORMATS[encoding][0], sample_rate, _LAYOUTS[channels]), chain)


def decoded(
    data: bytes, demuxer: str, raw: tuple[int, int] | None, out_rate: int | None
) -> Metered:
    """Audio in ffmpeg's ``demuxer`` format (``mp3``, ``ogg``, ``wav``, ``flac``, ``aac``; raw
    ``mulaw``/``alaw`` with ``raw`` = (rate in Hz, channels)) decoded, as s16 mono at
    ``out_rate`` Hz (None: its own rate) and measured, as :func:`metered`. Raises
    ``av.FFmpegError`` for what cannot be decoded, ``ValueError`` for a stream whose shape
    changes midway."""
    import av

    options = {}
    if raw is not None:
        options = {"sample_rate": str(raw[0]), "ch_layout": _LAYOUTS.get(raw[1], "mono")}
    with av.open(io.BytesIO(data), "r", format=demuxer, options=options) as container:
        frames = list(container.decode(audio=0))
    if not frames:
        return Metered(b"", out_rate or 0, _NO_MEASUREMENT_LUFS, -math.inf)
    first = frames[0]
    shape = (first.format.name, first.sample_rate, first.layout.name)
    written = 0
    for frame in frames:
        if (frame.format.name, frame.sample_rate, frame.layout.name) != shape:
            raise ValueError("the audio changes its sample format, rate or channels midway")
        frame.pts, frame.time_base = written, Fraction(1, first.sample_rate)
        written += frame.samples
    return _run(frames, shape, _resampled(first.sample_rate, out_rate))


def gained(
    data: bytes,
    sample_rate: int,
    gain_db: float,
    ceiling_dbtp: float | None,
    *,
    true_peak: bool = True,
) -> Metered:
    """PCM s16le mono with ``gain_db`` applied and, with a ``ceiling_dbtp``, its peaks held under
    it by the limiter :func:`bot.audio.transcode.metered_graph` uses, then measured (with
    ``true_peak`` False, its peak is the sample peak: see :class:`_Metering`)."""
    frames = _frames(data, AudioEncoding.PCM_S16LE, sample_rate, 1)
    chain = _gain_chain(gain_db, ceiling_dbtp)
    return _run(frames, ("s16", sample_rate, "mono"), chain, true_peak=true_peak)


def encodable(codec: str, muxer: str) -> bool:
    """Whether :func:`encode` can make this codec in this container here."""
    import av

    return codec in av.codecs_available and muxer in av.formats_available


def encode(
    data: bytes,
    sample_rate: int,
    target: tuple[str, str, int, int],
    bitrate_kbps: int | None,
    options: Mapping[str, str],
) -> bytes:
    """PCM s16le mono at ``sample_rate`` Hz encoded as ``target`` (muxer, codec, rate in Hz,
    channels) at ``bitrate_kbps`` with the codec's private ``options`` (libopus's
    ``frame_duration``…): what ``ffmpeg -c:a CODEC -ar RATE -ac CHANNELS -f MUXER`` makes."""
    import av

    muxer, codec, rate, channels = target
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream = container.add_stream(
            codec, rate=rate, layout=_LAYOUTS[channels], options=dict(options)
        )
        assert isinstance(stream, av.AudioStream)  # an audio codec gives an audio stream
        if bitrate_kbps is not None:
            stream.bit_rate = bitrate_kbps * 1000
        # the encoder's own sample format and frame size; the resampler cuts frames to it
        resampler = av.AudioResampler(
            format=stream.format.name,
            layout=_LAYOUTS[channels],
            rate=rate,
            frame_size=stream.frame_size or None,
        )
        written = 0  # samples; the encoder counts its priming samples from the first pts
        for frame in [*_frames(data, AudioEncoding.PCM_S16LE, sample_rate, 1), None]:
            for cut in resampler.resample(frame):
                cut.pts, cut.time_base = written, Fraction(1, rate)
                written += cut.samples
                container.mux(stream.encode(cut))
        container.mux(stream.encode(None))
    return out.getvalue()


def resampled(data: bytes, sample_rate: int, rate: int, channels: int) -> bytes:
    """PCM s16le mono at ``sample_rate`` Hz as PCM s16le at ``rate`` Hz, ``channels``
    interleaved (the mono copied into each): libswresample, as the ffmpeg command resamples."""
    import av

    layout = _LAYOUTS[channels]
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    width = 2 * channels
    out = []
    for frame in [*_frames(data, AudioEncoding.PCM_S16LE, sample_rate, 1), None]:
        for cut in resampler.resample(frame):
            out.append(bytes(cut.planes[0])[: cut.samples * width])
    return b"".join(out)
