"""Audio for the fake providers: a deterministic tone "voice" and the encoders the APIs need.

Every fake takes a *synthesizer*: ``text -> (pcm_s16le_mono, sample_rate)``, sync or async. The
default, :func:`tone_synthesizer`, beeps one short tone per character, so longer text gives longer
audio and the same text always gives the same bytes. Tests that need real speech plug in Piper.

Headerless PCM variants and WAV are made in Python (numpy, ``wave``); MP3, Opus, AAC and FLAC go
through an ffmpeg binary (``ffmpeg`` on the PATH, else the one ``imageio-ffmpeg`` bundles).
"""

from __future__ import annotations

import asyncio
import inspect
import io
import shutil
import wave
from collections.abc import Awaitable, Callable
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "SECONDS_PER_CHARACTER",
    "TONE_RATE",
    "PcmEncoding",
    "SynthesisResult",
    "Synthesizer",
    "encode_pcm",
    "encode_with_ffmpeg",
    "find_ffmpeg",
    "resample",
    "run_synthesizer",
    "tone_synthesizer",
    "wav_bytes",
]

SynthesisResult = tuple[bytes, int]
Synthesizer = Callable[[str], SynthesisResult | Awaitable[SynthesisResult]]
PcmEncoding = Literal["pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw"]

TONE_RATE = 24_000
SECONDS_PER_CHARACTER = 0.06


def tone_synthesizer(text: str) -> SynthesisResult:
    """60 ms of sine per character (pitch from the character), s16le mono at 24 kHz."""
    per_char = int(TONE_RATE * SECONDS_PER_CHARACTER)
    pitches = [220.0 + (ord(c) % 32) * 20.0 for c in (text or " ")]
    frequency = np.repeat(np.array(pitches), per_char)
    phase = 2 * np.pi * np.cumsum(frequency) / TONE_RATE
    samples = (0.3 * 32767 * np.sin(phase)).astype("<i2")
    return samples.tobytes(), TONE_RATE


async def run_synthesizer(synthesizer: Synthesizer, text: str) -> SynthesisResult:
    """Call a sync (in a worker thread, so it cannot block the server) or async synthesizer."""
    if inspect.iscoroutinefunction(synthesizer):
        result = await synthesizer(text)
    else:
        result = await asyncio.to_thread(synthesizer, text)
        if inspect.isawaitable(result):
            result = await result
    pcm, rate = cast(SynthesisResult, result)
    return bytes(pcm), int(rate)


def _samples(pcm: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")


def resample(pcm: bytes, rate: int, target: int) -> bytes:
    """Linear-interpolation resampling of s16le mono (good enough for a fake)."""
    if rate == target or not pcm:
        return pcm
    source = _samples(pcm).astype(np.float64)
    count = max(1, round(len(source) * target / rate))
    positions = np.arange(count) * (rate / target)
    result: npt.NDArray[np.float64] = np.interp(positions, np.arange(len(source)), source)
    return np.clip(np.round(result), -32768, 32767).astype("<i2").tobytes()


def _mulaw(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 mu-law, the classic bias-and-segment encoder."""
    values = samples.astype(np.int32)
    sign = np.where(values < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(values), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: npt.NDArray[np.int32] = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return encoded.astype(np.uint8).tobytes()


def _alaw(samples: npt.NDArray[np.int16]) -> bytes:
    """G.711 A-law (13-bit input, segment search, even bits inverted)."""
    values = samples.astype(np.int32) >> 3
    mask = np.where(values >= 0, 0xD5, 0x55)
    values = np.where(values >= 0, values, -values - 1)
    ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    segment = np.searchsorted(ends, values, side="left")
    shift = np.where(segment < 2, 1, segment)
    low = (values >> np.minimum(shift, 7)) & 0x0F
    encoded = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | low)
    return ((encoded ^ mask) & 0xFF).astype(np.uint8).tobytes()


def encode_pcm(pcm: bytes, encoding: PcmEncoding) -> bytes:
    """Headerless PCM in one of Together's ``response_encoding`` values, from s16le."""
    samples = _samples(pcm)
    if encoding == "pcm_s16le":
        return samples.tobytes()
    if encoding == "pcm_f32le":
        return (samples.astype("<f4") / 32768.0).astype("<f4").tobytes()
    if encoding == "pcm_mulaw":
        return _mulaw(samples)
    return _alaw(samples)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A RIFF/WAVE file holding s16le mono ``pcm``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def find_ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


# ffmpeg output arguments per container.
_FFMPEG_OUTPUT: dict[str, list[str]] = {
    "mp3": ["-c:a", "libmp3lame", "-f", "mp3"],
    "opus": ["-c:a", "libopus", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "vorbis": ["-c:a", "libvorbis", "-f", "ogg"],
}


async def encode_with_ffmpeg(
    pcm: bytes, rate: int, container: str, *, bit_rate: int | None = None
) -> bytes:
    """Encode s16le mono to mp3 / opus (Ogg) / aac (ADTS) / flac / vorbis (Ogg) through ffmpeg
    pipes."""
    arguments = [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    arguments += ["-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0"]
    if bit_rate is not None:
        arguments += ["-b:a", str(bit_rate)]
    arguments += [*_FFMPEG_OUTPUT[container], "pipe:1"]
    process = await asyncio.create_subprocess_exec(
        *arguments,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(pcm), timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({container}): {errors.decode(errors='replace')}")
    return output
