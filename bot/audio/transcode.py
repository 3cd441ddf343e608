"""Transcoding: provider audio in a sink's profile, with no ffmpeg run per utterance (or one).

**analyse** makes canonical PCM (s16le, 48 kHz, mono; for MP3 and WAV, the audio's own rate) and
measures EBU R128 loudness and true peak, in this process (:mod:`bot.audio.libav`: libav through
PyAV), ffmpeg decoding only what libav cannot; **normalise** applies the gain to the target with
a limiter for the peaks, in this process too, measuring each round, so a gain the limiter ate
into is corrected before anything is encoded; **encode** makes the profile: Ogg Opus in this
process, MP3 too (LAME through lameenc), WAV by writing its header. ffmpeg is ``audio.ffmpeg_path``,
else on the PATH, else imageio-ffmpeg's; a failed or timed-out run raises
:class:`~bot.errors.TranscodeError` with ffmpeg's stderr tail. Over 450 lines because the
ffmpeg graphs (which live streams still use), their loudness reading and the learned per-voice
gain are one job that only makes sense together.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import re
import shutil
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, get_args

from bot.audio import libav, mp3
from bot.errors import AudioError, FFmpegNotFound, TranscodeError
from bot.ops.config import MPEG1_MIN_RATE, MPEG2_MAX_KBPS, AudioSettings, Mp3Rate
from bot.speech import AudioChunk, AudioEncoding, OutputProfile

__all__ = [
    "MP3_FALLBACK_RATE",
    "MP3_RATES",
    "TOLERANCE_LU",
    "EncodedAudio",
    "Loudness",
    "PcmAudio",
    "ProfileSpec",
    "Transcoder",
    "VoiceGains",
    "ffmpeg_input_args",
    "find_ffmpeg",
    "metered_graph",
    "mp3_rate",
    "parse_ebur128",
    "profile_spec",
    "stderr_tail",
    "wav_pcm",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Sample rate (Hz) of the canonical PCM that non-PCM input is decoded to.
CANONICAL_RATE = 48_000
#: The rates (Hz) an MP3 frame can have (:data:`bot.ops.config.Mp3Rate`).
MP3_RATES = frozenset(get_args(Mp3Rate))
#: The MP3 rate of audio at a rate MP3 has not (or whose bitrate it cannot carry).
MP3_FALLBACK_RATE = 44_100

_STDERR_TAIL_LINES = 12

# ffmpeg demuxer/format name and input arguments per provider encoding.
_INPUT_FORMAT: dict[AudioEncoding, str] = {
    AudioEncoding.PCM_S16LE: "s16le",
    AudioEncoding.PCM_F32LE: "f32le",
    AudioEncoding.PCM_MULAW: "mulaw",
    AudioEncoding.PCM_ALAW: "alaw",
    AudioEncoding.WAV: "wav",
    AudioEncoding.MP3: "mp3",
    AudioEncoding.OGG_OPUS: "ogg",
    AudioEncoding.FLAC: "flac",
    AudioEncoding.AAC: "aac",
}

# ebur128 reports integrated loudness of silence as -70 LUFS, its gate.
_SILENCE_LUFS = -69.9
#: Loudness error (LU) accepted before another limiter round; at most ``_MAX_ROUNDS`` rounds.
#: The rounds run in this process (~10 ms per 5 s of speech), not as ffmpeg runs.
TOLERANCE_LU = 0.5
_MAX_ROUNDS = 3
# LU per dB of gain when the limiter holds Piper's peaks (measured ~0.45), and the least the
# rounds' own measurements are taken to say.
_LIMITED_SLOPE = 0.5
_MIN_SLOPE = 0.2
# dB of gain over the expected one a limited first round starts at: a round too loud is done by
# turning it down (no second limiter pass), one too quiet takes another round. With the voice's
# last gain as the expected one, 40 of Piper's sentences took 1.32 limiter rounds each without
# it, 1.10 with it (1.5 dB: 1.05, but the limiter then works harder for nothing).
_OVERSHOOT_DB = 1.0
# What the limiter may be expected to take (dB) at most, from the voice's last gain.
_MAX_EXPECTED_LOSS_DB = 3.0
# Never amplify by more than this (dB): near-silence is noise, not quiet speech.
_MAX_GAIN_DB = 24.0

#: Seconds after a voice's sentence before the graph of its next predicted pass is built
#: (:meth:`Transcoder.build_ahead`): the sentence is handed on first, not slowed by the build.
BUILD_AHEAD_DELAY_S = 0.02
#: Graphs built ahead and kept for their pass (one per voice and gain), at most.
_GRAPHS_AHEAD = 16

# Encodings whose streams may be cut into chunks and glued back byte by byte.
_CONCATENABLE = {AudioEncoding.MP3, AudioEncoding.AAC}


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """How an :class:`OutputProfile` is encoded: muxer, codec, rate (Hz), channels, bitrate;
    ``in_process``: in this process (:func:`bot.audio.libav.encode`; MP3:
    :func:`bot.audio.mp3.encode`) rather than an ffmpeg run, where ``bench/transcode.py``
    measured it faster."""

    profile: OutputProfile
    muxer: str
    codec: str
    sample_rate: int
    channels: int
    bitrate_kbps: int | None
    codec_args: tuple[tuple[str, Any], ...] = ()
    in_process: bool = False

    def output_args(self) -> list[str]:
        """ffmpeg's output arguments (before the output name), as :meth:`output_kwargs`."""
        args = ["-c:a", self.codec, "-ar", str(self.sample_rate), "-ac", str(self.channels)]
        if self.bitrate_kbps is not None:
            args += ["-b:a", f"{self.bitrate_kbps}k"]
        for key, value in self.codec_args:
            args += [f"-{key}", str(value)]
        return [*args, "-f", self.muxer]

    def output_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "f": self.muxer,
            "acodec": self.codec,
            "ar": self.sample_rate,
            "ac": self.channels,
        }
        if self.bitrate_kbps is not None:
            kwargs["audio_bitrate"] = f"{self.bitrate_kbps}k"
        kwargs.update(dict(self.codec_args))
        return kwargs


def profile_spec(profile: OutputProfile, settings: AudioSettings) -> ProfileSpec:
    """The encoding of each profile.

    ``discord``: Discord voice carries Opus at 48 kHz, 2 channels, 20 ms frames (Discord developer
    docs, "Voice connections"), so Ogg Opus in exactly that shape is played without re-encoding.
    PyAV's libopus encodes it in this process. ``mp3``: LAME in this process too, through
    ``lameenc`` (:func:`bot.audio.mp3.encode`), faster than the ffmpeg run and than PyAV's
    LAME (bench/transcode.py); mono unless ``audio.mp3_channels`` is 2 (speech is mono, and
    LAME takes 9 ms instead of 13.6 for 2.7 s of it; Home Assistant's own ``tts.speak`` gives
    speakers mono MP3 too). Its rate here is ``audio.mp3_sample_rate`` or 44.1 kHz; what
    :meth:`Transcoder.encode` uses is :func:`mp3_rate` of the audio.
    """
    if profile is OutputProfile.OGG_OPUS:
        return ProfileSpec(
            profile,
            "ogg",
            "libopus",
            48_000,
            2,
            settings.discord_bitrate_kbps,
            (("frame_duration", 20), ("application", "audio"), ("vbr", "on")),
            in_process=True,
        )
    if profile is OutputProfile.MP3:
        return ProfileSpec(
            profile,
            "mp3",
            "libmp3lame",
            settings.mp3_sample_rate or MP3_FALLBACK_RATE,
            settings.mp3_channels,
            settings.mp3_bitrate_kbps,
            in_process=True,
        )
    # wav keeps the voice's own rate where libav reads its audio (Transcoder.transcode): no
    # resampling, and a Wyoming client gets what wyoming-piper would send; 48 kHz otherwise
    return ProfileSpec(profile, "wav", "pcm_s16le", CANONICAL_RATE, 1, None)


def mp3_rate(source_rate: int, settings: AudioSettings) -> int:
    """The rate (Hz) audio at ``source_rate`` is encoded at as MP3: ``audio.mp3_sample_rate``
    when set; else its own rate when MP3 has it (:data:`MP3_RATES`) at the configured bitrate,
    as Home Assistant's ``tts.speak`` keeps an engine's rate (its ffmpeg conversion passes no
    ``-ar``): Piper's 22.05 kHz is encoded as it is (~7.5 ms for 3 s at LAME's quality 3,
    instead of ~12.7 ms resampled to 44.1 kHz), and it carries nothing above 11 kHz anyway;
    else 44.1 kHz."""
    if settings.mp3_sample_rate is not None:
        return settings.mp3_sample_rate
    fits = source_rate >= MPEG1_MIN_RATE or settings.mp3_bitrate_kbps <= MPEG2_MAX_KBPS
    return source_rate if source_rate in MP3_RATES and fits else MP3_FALLBACK_RATE


@dataclass(frozen=True, slots=True)
class Loudness:
    """An EBU R128 measurement: integrated loudness (LUFS) and true peak (dBTP). Audio that
    went through the normalisation rounds (:meth:`Transcoder.transcode`) carries its sample
    peak (dBFS, the level the limiter holds) in ``true_peak_dbtp``: its true peak is not
    measured there, as nothing reads it."""

    integrated_lufs: float
    true_peak_dbtp: float

    @property
    def is_silent(self) -> bool:
        return self.integrated_lufs <= _SILENCE_LUFS


@dataclass(frozen=True, slots=True)
class PcmAudio:
    """Canonical audio between steps: PCM s16le at ``sample_rate`` Hz with ``channels``."""

    data: bytes
    sample_rate: int
    channels: int
    loudness: Loudness

    @property
    def duration_s(self) -> float:
        return len(self.data) / (2 * self.sample_rate * self.channels)


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    """Audio encoded per ``spec``: ``duration_s`` in seconds, ``loudness`` as encoded,
    ``gain_db`` the gain that normalisation applied (None: not normalised)."""

    data: bytes
    spec: ProfileSpec
    duration_s: float
    loudness: Loudness
    gain_db: float | None = None


class VoiceGains:
    """The gain (dB) each voice needs to reach ``target_lufs``, learned from its last
    normalised utterance: the gain applied plus the error measured, at most ``cap_db`` either
    way; with a ``weight`` below 1, that much of it and the rest of the gain known before (an
    average of the last utterances, for audio whose level varies from one to the next). Keyed
    by voice label."""

    def __init__(self, target_lufs: float, cap_db: float = _MAX_GAIN_DB) -> None:
        self.target_lufs = target_lufs
        self.cap_db = cap_db
        self._gains: dict[str, float] = {}

    def get(self, voice: str) -> float | None:
        return self._gains.get(voice)

    def learn(self, voice: str, encoded: EncodedAudio, *, weight: float = 1.0) -> None:
        if encoded.gain_db is None or encoded.loudness.is_silent:
            return
        gain = encoded.gain_db + self.target_lufs - encoded.loudness.integrated_lufs
        known = self._gains.get(voice)
        if known is not None:
            gain = weight * gain + (1 - weight) * known
        self._gains[voice] = max(-self.cap_db, min(self.cap_db, gain))


def find_ffmpeg(configured: Path | None = None) -> str:
    """Path of the ffmpeg binary to use. Raises :class:`FFmpegNotFound`."""
    if configured is not None:
        if not configured.is_file():
            raise FFmpegNotFound(f"audio.ffmpeg_path {configured} is not a file")
        return str(configured)
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise FFmpegNotFound(f"none on the PATH and imageio-ffmpeg failed: {exc}") from None


def stderr_tail(stderr: bytes) -> str:
    """The last lines ffmpeg printed on stderr, for :class:`TranscodeError`."""
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return "\n".join(lines[-_STDERR_TAIL_LINES:])


def ffmpeg_input_args(encoding: AudioEncoding, sample_rate: int, channels: int) -> list[str]:
    """ffmpeg's arguments before ``-i pipe:0`` for audio in ``encoding``.

    Raw PCM needs its sample rate (Hz) and channel count; raises :class:`AudioError` without.
    """
    args = ["-f", _INPUT_FORMAT[encoding]]
    if encoding.is_raw_pcm:
        if sample_rate <= 0 or channels <= 0:
            raise AudioError(f"raw {encoding.value} audio needs a sample rate and a channel count")
        args += ["-ar", str(sample_rate), "-ac", str(channels)]
    return args


def metered_graph(
    gain_db: float | None, ceiling_dbtp: float, *, limit: bool, canonical: bool = False
) -> str:
    """An ffmpeg ``-filter_complex``: input ``[0:a]`` (with ``canonical``, first made canonical
    PCM, s16 at 48 kHz, as :meth:`Transcoder.analyse` makes it), ``gain_db`` (None: none), then,
    with ``limit``, a limiter at ``ceiling_dbtp``, out as ``[out]``; an EBU R128 meter on a
    branch of its own prints what goes out on stderr at the end (:func:`parse_ebur128`).

    In line, ``ebur128`` holds back ~60 ms of audio, which a stream would hear; and
    ffmpeg-python cannot express a branch that ends in a sink, hence a string.
    """
    chain = ""
    if canonical:  # s16 drops the resampler's sub-LSB noise, which Opus would spend bits on
        chain = f"aresample={CANONICAL_RATE},aformat=sample_fmts=s16,"
    if gain_db is not None:
        chain += f"volume={gain_db:.2f}dB,"
        if limit:
            ceiling = 10 ** (ceiling_dbtp / 20)
            chain += f"alimiter=limit={ceiling:.4f}:attack=5:release=50:level=false,"
    return f"[0:a]{chain}asplit[out][meter];[meter]ebur128=peak=true:framelog=quiet,anullsink"


def _fix_wav_sizes(data: bytes) -> bytes:
    """Write the real RIFF and data sizes into a WAV that ffmpeg wrote to a pipe.

    ffmpeg cannot seek back on a pipe, so it leaves both sizes at 0xFFFFFFFF; strict readers
    (Python's ``wave``, many speakers) then take the file for 4 GiB long.
    """
    at = data.find(b"data", 12)
    if data[:4] != b"RIFF" or at < 0:
        return data
    fixed = bytearray(data)
    fixed[4:8] = (len(data) - 8).to_bytes(4, "little")
    fixed[at + 4 : at + 8] = (len(data) - at - 8).to_bytes(4, "little")
    return bytes(fixed)


_SUMMARY_I = re.compile(rb"^\s*I:\s+(-?[\d.]+|-?inf) LUFS", re.MULTILINE)
_SUMMARY_PEAK = re.compile(rb"^\s*Peak:\s+(-?[\d.]+|-?inf) dBFS", re.MULTILINE)


def parse_ebur128(stderr: bytes) -> Loudness:
    """Read the summary ``ebur128=peak=true`` prints on stderr when its input ends."""
    loudness, peak = _SUMMARY_I.findall(stderr), _SUMMARY_PEAK.findall(stderr)
    if not loudness or not peak:
        raise TranscodeError(
            "ffmpeg printed no loudness measurement", returncode=0, stderr_tail=stderr_tail(stderr)
        )
    return Loudness(float(loudness[-1]), float(peak[-1]))


class Transcoder:
    """Runs libav (in this process) and ffmpeg for the pipeline. One instance is shared; what
    it holds across calls is the graphs built ahead (:meth:`build_ahead`)."""

    def __init__(self, settings: AudioSettings) -> None:
        self.settings = settings
        self._ffmpeg: str | None = None
        # predicted first rounds' graphs, built ahead, each taken by one pass: by
        # (rate, gain chain); a task while it is built
        self._ahead: dict[tuple[int, str], asyncio.Task[libav.GainStream]] = {}
        self._pending: dict[tuple[int, str], asyncio.TimerHandle] = {}  # to be built

    def build_ahead(self, chunks: Sequence[AudioChunk], gain_db: float | None) -> None:
        """Build, in a worker thread :data:`BUILD_AHEAD_DELAY_S` from now, the libav graph that
        :meth:`transcode` with ``gain_db`` would first run on audio shaped like ``chunks`` (a
        voice's last sentence), so that its pass does not wait for it. Nothing for audio whose
        pass is not predicted (see :meth:`transcode`), nor with normalisation off."""
        if gain_db is None or (chunk := self._predictable(chunks)) is None:
            return
        applied, ceiling = self._first_round(gain_db)
        key = (chunk.sample_rate, libav.gain_key(applied, ceiling))
        if key in self._ahead or key in self._pending:
            return
        self._pending[key] = asyncio.get_running_loop().call_later(
            BUILD_AHEAD_DELAY_S, self._build, key, (chunk.sample_rate, applied, ceiling)
        )

    def _build(self, key: tuple[int, str], shape: tuple[int, float, float | None]) -> None:
        del self._pending[key]
        while len(self._ahead) >= _GRAPHS_AHEAD:  # the oldest first
            oldest = next(iter(self._ahead))
            self._ahead.pop(oldest).cancel()
        task = asyncio.ensure_future(asyncio.to_thread(libav.GainStream, *shape))
        task.add_done_callback(_retrieved)
        self._ahead[key] = task

    async def _built(self, key: tuple[int, str]) -> libav.GainStream | None:
        """The graph built ahead for ``key`` (taken: it serves one pass), None when there is
        none or it could not be built."""
        task = self._ahead.pop(key, None)
        if task is None:
            if (timer := self._pending.pop(key, None)) is not None:
                timer.cancel()  # too late for this pass: it builds its own
            return None
        try:
            return await asyncio.shield(task)
        except Exception:  # av.FFmpegError: the pass builds its own and says what is wrong
            return None

    async def aclose(self) -> None:
        """Drop what was built ahead (and what was about to be)."""
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        tasks, self._ahead = list(self._ahead.values()), {}
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task

    def _first_round(self, gain_db: float) -> tuple[float, float]:
        """(gain applied, ceiling) of a predicted pass's first round from ``gain_db``
        (:meth:`_rounds` with the limiter)."""
        gain = gain_db + _OVERSHOOT_DB
        return max(-_MAX_GAIN_DB, min(gain, _MAX_GAIN_DB)), self.settings.true_peak_dbtp

    @property
    def ffmpeg(self) -> str:
        if self._ffmpeg is None:
            self._ffmpeg = find_ffmpeg(self.settings.ffmpeg_path)
        return self._ffmpeg

    async def pipe(
        self, stream: Any, data: bytes, what: str, *, loglevel: str = "error"
    ) -> tuple[bytes, bytes]:
        """Pipe ``data`` through one ffmpeg run of an ffmpeg-python graph: (stdout, stderr).

        ``what`` says what the run does ("decoding the mp3 audio"), for error messages.
        Raises :class:`TranscodeError` on a non-zero exit or after ``audio.ffmpeg_timeout_s``.
        """
        import ffmpeg  # ffmpeg-python (~10 ms), for the runs that are left: not Opus, not WAV

        return await self.pipe_args(ffmpeg.get_args(stream), data, what, loglevel=loglevel)

    async def pipe_args(
        self, graph: list[str], data: bytes, what: str, *, loglevel: str = "error"
    ) -> tuple[bytes, bytes]:
        """:meth:`pipe` with ffmpeg's arguments (inputs, filters, outputs) as a list."""
        args = [self.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel]
        args += graph
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        timeout = self.settings.ffmpeg_timeout_s
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(data), timeout)
        except TimeoutError:
            proc.kill()
            _, stderr = await proc.communicate()
            raise TranscodeError(
                f"ffmpeg did not finish {what} within {timeout:g} s (audio.ffmpeg_timeout_s)",
                returncode=None,
                stderr_tail=stderr_tail(stderr),
            ) from None
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise TranscodeError(
                f"ffmpeg failed {what} (exit status {proc.returncode})",
                returncode=proc.returncode,
                stderr_tail=stderr_tail(stderr),
            )
        return stdout, stderr

    @staticmethod
    def _input(encoding: AudioEncoding, sample_rate: int, channels: int) -> Any:
        kwargs: dict[str, Any] = {"f": _INPUT_FORMAT[encoding]}
        if encoding.is_raw_pcm:
            if sample_rate <= 0 or channels <= 0:
                raise AudioError(
                    f"raw {encoding.value} audio needs a sample rate and a channel count"
                )
            kwargs.update(ar=sample_rate, ac=channels)
        import ffmpeg

        return ffmpeg.input("pipe:0", **kwargs)

    async def _to_canonical(self, stream: Any, data: bytes, what: str) -> PcmAudio:
        """Run ``stream`` through the loudness meter into canonical PCM."""
        graph = stream.filter("ebur128", peak="true", framelog="quiet").output(
            "pipe:1", f="s16le", acodec="pcm_s16le", ar=CANONICAL_RATE, ac=1
        )
        stdout, stderr = await self.pipe(graph, data, what, loglevel="info")
        if not stdout:
            raise TranscodeError(
                f"ffmpeg found no audio {what}", returncode=0, stderr_tail=stderr_tail(stderr)
            )
        return PcmAudio(stdout, CANONICAL_RATE, 1, parse_ebur128(stderr))

    async def warm_up(self) -> None:
        """Import libav (PyAV, ~30 ms) in a worker thread now, while a model loads (onnxruntime
        leaves the interpreter free meanwhile), rather than with the first utterance."""
        await asyncio.to_thread(libav.warm_up)

    async def in_process(self, work: Callable[..., _T], *args: Any, what: str) -> _T:
        """``work(*args)`` from :mod:`bot.audio.libav` (or :mod:`bot.audio.mp3`, whose LAME
        raises ``RuntimeError``) in a worker thread."""
        import av

        try:
            result = await asyncio.to_thread(work, *args)
        except (av.FFmpegError, RuntimeError) as exc:
            raise TranscodeError(
                f"{'LAME' if work is mp3.encode else 'libav (PyAV)'} failed {what}: {exc}",
                returncode=None,
                stderr_tail="",
            ) from None
        return result

    @staticmethod
    def _pcm(metered: libav.Metered) -> PcmAudio:
        level = Loudness(metered.integrated_lufs, metered.true_peak_dbtp)
        return PcmAudio(metered.data, metered.sample_rate, 1, level)

    async def analyse(self, chunks: Sequence[AudioChunk], *, own_rate: bool = False) -> PcmAudio:
        """Decode provider audio to canonical PCM and measure its loudness; with ``own_rate``,
        PCM at the audio's own rate (not resampled) where libav reads it, else canonical.

        Chunks of raw PCM or of a stream format (MP3, AAC) are joined; containers (WAV, Ogg)
        are decoded one by one. All of it is read in this process (libav), and what libav
        cannot decode is given to ffmpeg, which says why it cannot either. Raises
        :class:`AudioError` when there is no audio, and :class:`TranscodeError` when it cannot be
        decoded.
        """
        chunks = [c for c in chunks if c.data]
        if not chunks:
            raise AudioError("the provider returned no audio")
        first = chunks[0]
        same = all(
            (c.encoding, c.sample_rate, c.channels)
            == (first.encoding, first.sample_rate, first.channels)
            for c in chunks
        )
        if len(chunks) == 1 or (
            same and (first.encoding.is_raw_pcm or first.encoding in _CONCATENABLE)
        ):
            data = b"".join(c.data for c in chunks)
            what = f"decoding the {first.encoding.value} audio"
            out_rate = None if own_rate else CANONICAL_RATE
            if libav.in_process(first.encoding, first.sample_rate, first.channels):
                pcm = self._pcm(
                    await self.in_process(
                        libav.metered,
                        data,
                        first.encoding,
                        first.sample_rate,
                        first.channels,
                        out_rate,
                        what=what,
                    )
                )
                if not pcm.data:
                    raise AudioError(f"no whole sample {what}")
                return pcm
            decoded = await self._decoded(first, data, out_rate)
            if decoded is not None:
                return decoded
            source = self._input(first.encoding, first.sample_rate, first.channels)
            return await self._to_canonical(source, data, what)
        parts = [await self.analyse([c]) for c in chunks]
        return await self.analyse(
            [
                AudioChunk(
                    b"".join(p.data for p in parts), AudioEncoding.PCM_S16LE, CANONICAL_RATE, 1
                )
            ]
        )

    async def _decoded(
        self, first: AudioChunk, data: bytes, out_rate: int | None
    ) -> PcmAudio | None:
        """``data`` (in ``first``'s encoding) decoded in this process at ``out_rate`` Hz (None:
        its own); None when libav cannot, and ffmpeg is to decode it (and say why it cannot
        either)."""
        import av

        raw = (first.sample_rate, first.channels) if first.encoding.is_raw_pcm else None
        if raw is not None and (raw[0] <= 0 or raw[1] <= 0):
            return None  # ffmpeg_input_args names what is missing
        try:
            metered = await asyncio.to_thread(
                libav.decoded, data, _INPUT_FORMAT[first.encoding], raw, out_rate
            )
        except (av.FFmpegError, ValueError) as exc:
            log.debug("libav cannot decode %s audio (%s): ffmpeg will", first.encoding.value, exc)
            return None
        return self._pcm(metered) if metered.data else None

    async def normalise(self, pcm: PcmAudio) -> PcmAudio:
        """Bring ``pcm`` to ``audio.loudness_target_lufs`` under ``audio.true_peak_dbtp``.

        Returns ``pcm`` unchanged when normalisation is off or the audio is silent.
        """
        return (await self._normalised(pcm, None))[0]

    async def _normalised(
        self, pcm: PcmAudio, expected_gain_db: float | None
    ) -> tuple[PcmAudio, float | None]:
        """:meth:`normalise`, and the gain it applied (None: none). A gain that puts the true
        peak over the ceiling gets the limiter, which takes loudness off the peaks: each round
        is measured and the next corrects the gain, up to three, all in this process.
        ``expected_gain_db`` (the voice's last gain) may start the rounds higher, by what the
        limiter took last time (at most 3 dB)."""
        s = self.settings
        level = pcm.loudness
        if not s.normalize_loudness or level.is_silent:
            return pcm, None
        gain = min(s.loudness_target_lufs - level.integrated_lufs, _MAX_GAIN_DB)
        limit = level.true_peak_dbtp + gain > s.true_peak_dbtp
        if limit and expected_gain_db is not None:
            gain += max(0.0, min(expected_gain_db - gain, _MAX_EXPECTED_LOSS_DB))
        return await self._rounds(pcm, gain, limit=limit)

    async def _rounds(self, pcm: PcmAudio, gain: float, *, limit: bool) -> tuple[PcmAudio, float]:
        """``gain`` (dB) on ``pcm``, with ``limit`` the limiter, measured; a result more than
        0.5 LU off the target is done again with the gain corrected, up to three rounds: (the
        result, the gain it got). Under the limiter a dB more gain is well under a LU more
        loudness (it takes the peaks back): the first correction assumes half, later ones the
        slope the rounds so far measured (secant), so three rounds mostly land. A result too
        loud is only turned down (:func:`_turned_down`): under the ceiling already, it needs no
        limiter and no measuring, as a gain below one lowers loudness and peaks by exactly
        itself (ITU-R BS.1770's gates are relative, or at -70 LUFS)."""
        s = self.settings
        if limit:
            gain += _OVERSHOOT_DB
        result, applied = pcm, gain
        tried: list[tuple[float, float]] = []  # (gain, loudness) of the rounds so far
        for _ in range(_MAX_ROUNDS if limit else 1):
            applied = max(-_MAX_GAIN_DB, min(gain, _MAX_GAIN_DB))
            ceiling = s.true_peak_dbtp if limit else None
            built = await self._built((pcm.sample_rate, libav.gain_key(applied, ceiling)))
            what = "normalising loudness"
            if built is not None:
                metered = await self.in_process(built.through, pcm.data, what=what)
            else:
                metered = await self.in_process(
                    _gained_sample_peak, pcm.data, pcm.sample_rate, applied, ceiling, what=what
                )
            result = self._pcm(metered)
            level = result.loudness.integrated_lufs
            error = s.loudness_target_lufs - level
            if abs(error) <= TOLERANCE_LU or result.loudness.is_silent:
                break
            if error < 0:  # too loud: down by the error, exactly
                return _turned_down(result, error), applied + error
            tried.append((applied, level))
            gain = applied + error / _slope(tried)
        return result, applied

    async def encode(self, pcm: PcmAudio, profile: OutputProfile) -> EncodedAudio:
        """Encode PCM s16le for ``profile``: Ogg Opus and MP3 in this process (an ffmpeg run for
        a shape they do not take), MP3 at :func:`mp3_rate` of ``pcm``'s; ``wav`` at ``pcm``'s
        own rate, by writing its header."""
        spec = profile_spec(profile, self.settings)
        if profile is OutputProfile.MP3:
            spec = replace(spec, sample_rate=mp3_rate(pcm.sample_rate, self.settings))
        if (spec.codec, spec.channels) == ("pcm_s16le", pcm.channels):
            spec = replace(spec, sample_rate=pcm.sample_rate)
            return EncodedAudio(_wav(pcm), spec, pcm.duration_s, pcm.loudness)
        what = f"encoding for the {profile.value} profile"
        if spec.in_process and pcm.channels == 1 and spec.codec == "libmp3lame":
            assert spec.bitrate_kbps is not None  # the mp3 profile has one
            target_mp3 = (spec.sample_rate, spec.channels)
            data = await self.in_process(
                mp3.encode, pcm.data, pcm.sample_rate, target_mp3, spec.bitrate_kbps, what=what
            )
            return EncodedAudio(data, spec, pcm.duration_s, pcm.loudness)
        if spec.in_process and pcm.channels == 1 and libav.encodable(spec.codec, spec.muxer):
            target = (spec.muxer, spec.codec, spec.sample_rate, spec.channels)
            options = {key: str(value) for key, value in spec.codec_args}
            data = await self.in_process(
                libav.encode,
                pcm.data,
                pcm.sample_rate,
                target,
                spec.bitrate_kbps,
                options,
                what=what,
            )
            return EncodedAudio(data, spec, pcm.duration_s, pcm.loudness)
        stream = self._input(AudioEncoding.PCM_S16LE, pcm.sample_rate, pcm.channels)
        graph = stream.output("pipe:1", **spec.output_kwargs())
        stdout, stderr = await self.pipe(graph, pcm.data, what)
        if not stdout:
            raise TranscodeError(
                f"ffmpeg produced no output {what}", returncode=0, stderr_tail=stderr_tail(stderr)
            )
        if spec.muxer == "wav":
            stdout = _fix_wav_sizes(stdout)
        return EncodedAudio(stdout, spec, pcm.duration_s, pcm.loudness)

    async def at_rate(self, data: bytes, profile: OutputProfile, rate: int) -> bytes:
        """``data``, audio this transcoder encoded for the ``mp3`` or ``wav`` profile, at
        ``rate`` Hz, the same otherwise (its loudness kept): the sentences of one text stay at
        the first one's rate when a voice at another rate took over midway, as an MP3 stream
        and a Wyoming ``audio-start`` have one rate. Raises :class:`TranscodeError` (audio
        libav cannot read) and ``ValueError`` for another profile (Ogg Opus is 48 kHz)."""
        what = f"resampling {profile.value} audio to {rate} Hz"
        if profile is OutputProfile.WAV:
            try:
                source_rate, samples = wav_pcm(data)
            except (wave.Error, EOFError) as exc:
                raise TranscodeError(
                    f"unreadable WAV {what}: {exc}", returncode=None, stderr_tail=""
                ) from None
            pcm = await self.in_process(libav.resampled, samples, source_rate, rate, 1, what=what)
            return _wav(PcmAudio(pcm, rate, 1, Loudness(-math.inf, -math.inf)))
        if profile is OutputProfile.MP3:
            spec = profile_spec(profile, self.settings)
            assert spec.bitrate_kbps is not None  # the mp3 profile has one
            # decoded at its own rate: the encoder resamples, once
            decoded = await self.in_process(libav.decoded, data, "mp3", None, None, what=what)
            target = (rate, spec.channels)
            return await self.in_process(
                mp3.encode, decoded.data, decoded.sample_rate, target, spec.bitrate_kbps, what=what
            )
        raise ValueError(f"the {profile.value} profile has one rate: nothing to resample")

    async def transcode(
        self,
        chunks: Sequence[AudioChunk],
        profile: OutputProfile,
        *,
        gain_db: float | None = None,
    ) -> EncodedAudio:
        """Provider audio in, normalised audio for ``profile`` out: :meth:`analyse`,
        :meth:`normalise`, :meth:`encode`: no ffmpeg run (one when libav cannot decode the
        input). ``gain_db``, the voice's last gain (:class:`VoiceGains`), is applied (with the
        limiter) to PCM s16le mono at once, without measuring it first: one pass through libav
        when it is within 0.5 LU, as it mostly is for the voice's next sentence. The result's
        ``gain_db`` is the gain applied (None: none) and its loudness what was encoded."""
        predicted = await self._predicted(chunks, gain_db)
        if predicted is not None:
            normalised, applied = predicted
        else:
            # at the audio's own rate (Piper's 22.05 kHz: the meter and each limiter round run on
            # under half of 48 kHz's samples; the encoder resamples once), but for Opus, whose
            # 48 kHz the filter graph resamples to faster than PyAV's resampler in the encoder
            # (bench/transcode.py)
            own_rate = profile is not OutputProfile.OGG_OPUS
            pcm = await self.analyse(chunks, own_rate=own_rate)
            normalised, applied = await self._normalised(pcm, gain_db)
        return replace(await self.encode(normalised, profile), gain_db=applied)

    async def _predicted(
        self, chunks: Sequence[AudioChunk], gain_db: float | None
    ) -> tuple[PcmAudio, float | None] | None:
        """One PCM s16le mono chunk normalised from ``gain_db`` on, with no measuring pass
        before (see :meth:`transcode`); None when it is not that, or there is no gain yet."""
        if gain_db is None or (chunk := self._predictable(chunks)) is None:
            return None
        whole = len(chunk.data) // 2 * 2
        pcm = PcmAudio(chunk.data[:whole], chunk.sample_rate, 1, Loudness(-math.inf, -math.inf))
        if not pcm.data:
            return None  # analyse says what is wrong
        result, applied = await self._rounds(pcm, gain_db, limit=True)
        if result.loudness.is_silent:
            return None  # measured as it is, as normalise leaves silence
        return result, applied

    def _predictable(self, chunks: Sequence[AudioChunk]) -> AudioChunk | None:
        """The one PCM s16le mono chunk of ``chunks`` when :meth:`_predicted` normalises it
        from a known gain on; else None."""
        chunks = [c for c in chunks if c.data]
        if not self.settings.normalize_loudness or len(chunks) != 1:
            return None
        (chunk,) = chunks
        shape = (chunk.encoding, chunk.channels)
        if shape != (AudioEncoding.PCM_S16LE, 1) or chunk.sample_rate <= 0:
            return None
        return chunk


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Marks a graph built ahead whose build failed as seen (its pass builds one itself)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a graph built ahead failed: %s", task.exception())


def _gained_sample_peak(
    data: bytes, sample_rate: int, gain_db: float, ceiling_dbtp: float | None
) -> libav.Metered:
    """:func:`libav.gained` metering the sample peak, not the true peak: a round's peak decides
    nothing (the limiter holds the sample peaks under the ceiling) and the true peak's 4×
    oversampling is ~60 % of a round's time (4.6 against 1.6 ms for 2.7 s of Piper's speech)."""
    return libav.gained(data, sample_rate, gain_db, ceiling_dbtp, true_peak=False)


def _turned_down(pcm: PcmAudio, gain_db: float) -> PcmAudio:
    """``pcm`` (s16le) with ``gain_db`` (< 0) applied: its loudness and peak lowered by as
    much, with no measuring pass (~0.1 ms for 3 s of Piper's speech, against ~2 ms a round)."""
    import numpy as np

    samples = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32)
    samples *= 10 ** (gain_db / 20)
    data = np.rint(samples).astype("<i2").tobytes()
    level = pcm.loudness
    lowered = Loudness(level.integrated_lufs + gain_db, level.true_peak_dbtp + gain_db)
    return replace(pcm, data=data, loudness=lowered)


def _slope(tried: Sequence[tuple[float, float]]) -> float:
    """LU of loudness per dB of gain under the limiter: measured from the last two rounds
    (``tried``: gain, loudness), else :data:`_LIMITED_SLOPE`; within 0.2 to 1."""
    if len(tried) >= 2 and tried[-1][0] != tried[-2][0]:
        (g1, l1), (g2, l2) = tried[-2], tried[-1]
        return max(_MIN_SLOPE, min((l2 - l1) / (g2 - g1), 1.0))
    return _LIMITED_SLOPE


def wav_pcm(data: bytes) -> tuple[int, bytes]:
    """(sample rate in Hz, PCM s16le mono) of a WAV file :meth:`Transcoder.encode` made for
    the ``wav`` profile. Raises ``wave.Error`` for another."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if (wav.getsampwidth(), wav.getnchannels()) != (2, 1):
            raise wave.Error("not PCM s16le mono")
        return wav.getframerate(), wav.readframes(wav.getnframes())


def _wav(pcm: PcmAudio) -> bytes:
    """``pcm`` in a WAV file (RIFF, PCM s16le), with its real sizes."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(pcm.channels)
        wav.setsampwidth(2)
        wav.setframerate(pcm.sample_rate)
        wav.writeframes(pcm.data)
    return out.getvalue()
