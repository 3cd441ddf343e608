"""Chimes: an announcement's chime and its speech in one file.

Speakers cut a playing item short when a second ``play_media`` comes, so the chime cannot be
played on its own first: it is decoded once (:func:`decode_chime`) and put before the speech
(:func:`mix_chime`).
"""

from __future__ import annotations

import ffmpeg

from bot.audio.transcode import CANONICAL_RATE, EncodedAudio, PcmAudio, Transcoder
from bot.errors import AudioError
from bot.speech import AudioChunk, AudioEncoding, OutputProfile

__all__ = ["CHIME_GAP_S", "decode_chime", "mix_chime"]

#: Silence between the chime and the speech, seconds.
CHIME_GAP_S = 0.3


async def decode_chime(transcoder: Transcoder, data: bytes) -> PcmAudio:
    """A chime file (any format ffmpeg reads) as canonical PCM at the loudness target.

    Raises :class:`AudioError` when it holds no audio, :class:`~bot.errors.TranscodeError`
    when ffmpeg cannot decode it.
    """
    graph = ffmpeg.input("pipe:0").output(
        "pipe:1", f="s16le", acodec="pcm_s16le", ar=CANONICAL_RATE, ac=1
    )
    raw, _ = await transcoder.pipe(graph, data, "decoding the chime")
    if not raw:
        raise AudioError("the chime holds no audio")
    pcm = await transcoder.analyse([AudioChunk(raw, AudioEncoding.PCM_S16LE, CANONICAL_RATE, 1)])
    return await transcoder.normalise(pcm)


async def mix_chime(
    transcoder: Transcoder, speech: AudioChunk, chime: PcmAudio | None, profile: OutputProfile
) -> EncodedAudio:
    """``chime`` (from :func:`decode_chime`), :data:`CHIME_GAP_S` of silence, then ``speech``,
    encoded for ``profile``; without a chime, the speech alone. The loudness reported is the
    speech's. Raises :class:`~bot.errors.TranscodeError` when ffmpeg fails.
    """
    pcm = await transcoder.analyse([speech])
    parts = [pcm.data]
    if chime is not None:
        gap = b"\x00\x00" * int(CHIME_GAP_S * CANONICAL_RATE)
        parts = [chime.data, gap, pcm.data]
    mixed = PcmAudio(b"".join(parts), CANONICAL_RATE, 1, pcm.loudness)
    return await transcoder.encode(mixed, profile)
