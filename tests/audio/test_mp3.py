"""MP3 files joined into one stream (real ffmpeg: Oyez's MP3 profile, tones)."""

from __future__ import annotations

import pytest

from bot.audio.mp3 import continued, id3_size
from bot.audio.transcode import Transcoder
from bot.ops.config import AudioSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile
from tests.audio.test_mix import RATE, pitch, wav
from tests.support.asr import decode


async def mp3(seconds: float, hertz: float) -> tuple[bytes, float]:
    transcoder = Transcoder(AudioSettings())
    chunk = AudioChunk(wav(seconds, hertz), AudioEncoding.WAV, 22_050, 1)
    encoded = await transcoder.transcode([chunk], OutputProfile.MP3)
    return encoded.data, encoded.duration_s


async def test_mp3_files_joined_play_as_one_stream_without_the_later_tags() -> None:
    (first, first_s), (second, second_s) = await mp3(1.0, 440), await mp3(1.0, 880)
    assert first[:3] == b"ID3"  # ffmpeg's muxer names itself in a tag
    assert id3_size(first) > 10
    later = continued(second)
    assert later[0] == 0xFF and later[1] & 0xE0 == 0xE0  # an MPEG frame's sync word
    assert b"ID3" not in later[:16]
    joined = first + later
    samples = decode(joined, RATE)
    # the encoder's delay and padding per file: a few tens of milliseconds between the two
    assert len(samples) / RATE == pytest.approx(first_s + second_s, abs=0.12)
    assert abs(pitch(samples, 0.2, 0.8) - 440) < 15
    assert abs(pitch(samples, len(samples) / RATE - 0.8, len(samples) / RATE - 0.2) - 880) < 15


def test_data_without_a_whole_tag_is_left_as_it_is() -> None:
    frames = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(100)
    assert continued(frames) == frames
    assert id3_size(b"ID3\x04\x00\x00\x00\x00\x7f\x7f" + bytes(5)) == 0  # says more than is there
    assert id3_size(b"ID3\x04\x00\x00\x80\x00\x00\x00") == 0  # not synchsafe: damaged
    tag = b"ID3\x04\x00\x10\x00\x00\x00\x02" + bytes(2 + 10)  # 2 bytes, then a footer
    assert id3_size(tag + frames) == 22
    assert continued(tag + frames) == frames
    assert continued(tag) == b""
