"""Pass-through playback: the packets discord.py's player is handed (real ffmpeg)."""

from __future__ import annotations

import io
import math
import struct

from discord.oggparse import OggStream

from bot.audio.transcode import Transcoder
from bot.ops.config import AudioSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile
from integrations.discord.audio import OggOpusSource


async def ogg_opus(seconds: float, hertz: float) -> bytes:
    rate = 24_000
    count = int(seconds * rate)
    samples = (int(9000 * math.sin(2 * math.pi * hertz * i / rate)) for i in range(count))
    pcm = AudioChunk(struct.pack(f"<{count}h", *samples), AudioEncoding.PCM_S16LE, rate, 1)
    encoded = await Transcoder(AudioSettings()).transcode([pcm], OutputProfile.OGG_OPUS)
    return encoded.data


async def test_the_player_gets_the_packets_discord_py_would_read() -> None:
    chained = await ogg_opus(1.0, 440) + await ogg_opus(0.5, 660)  # two cached sentences joined
    source = OggOpusSource(chained)
    played = list(iter(source.read, b""))
    reference = OggStream(io.BytesIO(chained)).iter_packets()
    assert played == [p for p in reference if not p.startswith((b"OpusHead", b"OpusTags"))]
    assert len(played) > 70  # 1.5 s of 20 ms packets
    assert source.is_opus()
    assert source.read() == b""  # and it stays ended
