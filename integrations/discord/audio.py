"""Discord voice output: Oyez's Ogg Opus played by pass-through.

The transcoder's ``discord`` profile is already what Discord voice carries (Opus, 48 kHz, stereo,
20 ms frames), so playback hands discord.py one Opus packet per 20 ms frame: no ffmpeg process
and no system libopus at play time.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import discord
from discord.oggparse import OggStream

__all__ = ["OggOpusSource", "VoiceClientOutput"]


class OggOpusSource(discord.AudioSource):
    """The packets of an Ogg Opus stream, one 20 ms Opus frame per :meth:`read`.

    The identification and comment headers (``OpusHead``, ``OpusTags``, RFC 7845) are skipped.
    """

    def __init__(self, ogg_opus: bytes) -> None:
        packets = OggStream(io.BytesIO(ogg_opus)).iter_packets()
        self._packets: Iterator[bytes] = (
            p for p in packets if not p.startswith((b"OpusHead", b"OpusTags"))
        )

    def read(self) -> bytes:
        return next(self._packets, b"")

    def is_opus(self) -> bool:
        return True


class VoiceClientOutput:
    """The player's :class:`~integrations.discord.player.VoiceOutput` over a discord.py
    ``VoiceClient``."""

    def __init__(self, voice: discord.VoiceClient) -> None:
        self.voice = voice

    def play_opus(self, ogg_opus: bytes, done: Callable[[Exception | None], None]) -> None:
        self.voice.play(OggOpusSource(ogg_opus), after=done)

    def stop(self) -> None:
        self.voice.stop()

    def is_connected(self) -> bool:
        return self.voice.is_connected()
