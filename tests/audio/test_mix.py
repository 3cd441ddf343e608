"""A chime before the speech, in one file (real ffmpeg, tones as chime and speech)."""

from __future__ import annotations

import io
import math
import struct
import wave

import numpy as np
import pytest

from bot.audio.mix import CHIME_GAP_S, decode_chime, mix_chime
from bot.audio.transcode import Transcoder
from bot.errors import AudioError
from bot.ops.config import AudioSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile
from tests.support.asr import decode
from tests.support.probe import describe

RATE = 44_100


def wav(seconds: float, hertz: float, rate: int = 22_050) -> bytes:
    count = int(seconds * rate)
    samples = (int(8000 * math.sin(2 * math.pi * hertz * i / rate)) for i in range(count))
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(struct.pack(f"<{count}h", *samples))
    return out.getvalue()


def pitch(samples: np.ndarray, start_s: float, end_s: float) -> float:
    """The strongest frequency (Hz) between two times of ``samples`` at :data:`RATE`."""
    piece = samples[int(start_s * RATE) : int(end_s * RATE)]
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece))))
    return float(np.fft.rfftfreq(len(piece), 1 / RATE)[int(np.argmax(spectrum))])


async def test_the_chime_comes_first_then_a_gap_then_the_speech() -> None:
    transcoder = Transcoder(AudioSettings())
    chime = await decode_chime(transcoder, wav(0.5, 1_000, rate=16_000))
    assert chime.duration_s == pytest.approx(0.5, abs=0.01)
    assert chime.loudness.integrated_lufs == pytest.approx(-16, abs=1.0)  # at the target
    speech = AudioChunk(wav(1.2, 300), AudioEncoding.WAV, 22_050, 1)
    mixed = await mix_chime(transcoder, speech, chime, OutputProfile.MP3)
    assert describe(mixed.data).startswith("mp3")
    assert mixed.duration_s == pytest.approx(0.5 + CHIME_GAP_S + 1.2, abs=0.01)
    samples = decode(mixed.data, RATE)
    assert len(samples) / RATE == pytest.approx(mixed.duration_s, abs=0.06)
    assert pitch(samples, 0.05, 0.45) == pytest.approx(1_000, abs=10)  # the chime
    gap = samples[int(0.55 * RATE) : int(0.75 * RATE)]
    assert float(np.max(np.abs(gap))) < 0.01
    assert pitch(samples, 0.9, 1.9) == pytest.approx(300, abs=10)  # the speech
    alone = await mix_chime(transcoder, speech, None, OutputProfile.MP3)
    assert alone.duration_s == pytest.approx(1.2, abs=0.01)
    assert pitch(decode(alone.data, RATE), 0.05, 0.45) == pytest.approx(300, abs=10)


async def test_a_chime_without_audio_is_refused() -> None:
    with pytest.raises(AudioError, match="the chime holds no audio"):
        await decode_chime(Transcoder(AudioSettings()), wav(0.0, 1_000))
