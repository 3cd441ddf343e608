"""Discord voice output: Oyez's Ogg Opus played by pass-through.

The transcoder's ``discord`` profile is already what Discord voice carries (Opus, 48 kHz, stereo,
20 ms frames), so playback hands discord.py one Opus packet per 20 ms frame: no ffmpeg process
and no system libopus at play time. Speech still being made plays from an
:class:`~integrations.discord.feed.OpusFeed` (:class:`OpusFeedSource`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import discord

from bot.audio.ogg import opus_packets
from integrations.discord.feed import OpusFeed

__all__ = ["OPUS_SILENCE", "OggOpusSource", "OpusFeedSource", "VoiceClientOutput"]

#: One 20 ms Opus frame of silence (what discord.py sends after playback to end it cleanly).
OPUS_SILENCE = b"\xf8\xff\xfe"
#: Seconds the sender thread waits for a late packet before it sends silence in its place
#: (discord.py's sender catches up on the next frames, so the 20 ms rhythm holds).
LATE_PACKET_WAIT_S = 0.010


class OggOpusSource(discord.AudioSource):
    """The audio packets of an Ogg Opus file (:func:`bot.audio.ogg.opus_packets`: headers left
    out), one 20 ms Opus frame per :meth:`read`. Raises :class:`~bot.errors.AudioError` on
    bytes that are not Ogg."""

    def __init__(self, ogg_opus: bytes) -> None:
        self._packets: Iterator[bytes] = iter(opus_packets(ogg_opus))

    def read(self) -> bytes:
        return next(self._packets, b"")

    def is_opus(self) -> bool:
        return True


class OpusFeedSource(discord.AudioSource):
    """The packets of an :class:`OpusFeed`, as they come: playback lasts until the feed is
    closed and empty. A packet that is late (the next sentence not ready yet) is replaced by
    silence rather than stalling the sender; it is played when it arrives."""

    def __init__(self, feed: OpusFeed) -> None:
        self.feed = feed

    def read(self) -> bytes:
        packet = self.feed.get(LATE_PACKET_WAIT_S)
        return OPUS_SILENCE if packet is None else packet

    def is_opus(self) -> bool:
        return True

    def cleanup(self) -> None:
        self.feed.close()


class VoiceClientOutput:
    """The player's :class:`~integrations.discord.player.VoiceOutput` over a discord.py
    ``VoiceClient``."""

    def __init__(self, voice: discord.VoiceClient) -> None:
        self.voice = voice

    def play_opus(self, ogg_opus: bytes, done: Callable[[Exception | None], None]) -> None:
        self.voice.play(OggOpusSource(ogg_opus), after=done)

    def play_feed(self, feed: OpusFeed, done: Callable[[Exception | None], None]) -> None:
        self.voice.play(OpusFeedSource(feed), after=done)

    def stop(self) -> None:
        self.voice.stop()

    def is_connected(self) -> bool:
        return self.voice.is_connected()
