"""MP3 files joined into one stream (real ffmpeg: Oyez's MP3 profile, tones); LAME's quality on
Piper's speech."""

from __future__ import annotations

import subprocess

import pytest

from bot.audio import libav
from bot.audio.mp3 import LAME_QUALITY, continued, encode, id3_size
from bot.audio.transcode import Transcoder, find_ffmpeg
from bot.ops.config import AudioSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile
from tests.audio.test_mix import RATE, pitch, wav
from tests.support.asr import decode
from tests.support.probe import log_spectral_distance
from tests.support.speech import piper_pcm

SENTENCE = "The washing machine has finished its cycle, and dinner is nearly ready."


async def mp3(seconds: float, hertz: float) -> tuple[bytes, float]:
    transcoder = Transcoder(AudioSettings())
    chunk = AudioChunk(wav(seconds, hertz), AudioEncoding.WAV, 22_050, 1)
    encoded = await transcoder.transcode([chunk], OutputProfile.MP3)
    return encoded.data, encoded.duration_s


def ffmpeg_mp3(seconds: float, hertz: float) -> bytes:
    """An MP3 made by the ffmpeg command in the shape of Oyez's for 22.05 kHz audio (22.05 kHz
    mono: MP3 keeps the audio's rate), whose muxer names itself in an ID3v2 tag."""
    command = [
        find_ffmpeg(),
        "-v",
        "error",
        "-f",
        "wav",
        "-i",
        "pipe:0",
        "-ar",
        "22050",
        "-ac",
        "1",
    ]
    command += ["-b:a", "128k", "-f", "mp3", "pipe:1"]
    return subprocess.run(command, input=wav(seconds, hertz), capture_output=True).stdout


async def test_oyez_mp3_is_bare_frames() -> None:
    data, seconds = await mp3(1.0, 440)
    assert id3_size(data) == 0 and continued(data) == data  # LAME through lameenc: no tag
    assert data[0] == 0xFF and data[1] & 0xE0 == 0xE0  # an MPEG frame's sync word
    assert b"Xing" not in data[:4096] and b"Info" not in data[:4096]  # nor a VBR header frame
    assert len(decode(data, RATE)) / RATE == pytest.approx(seconds, abs=0.08)


async def test_mp3_files_joined_play_as_one_stream_without_the_later_tags() -> None:
    (first, first_s), second_s = await mp3(1.0, 440), 1.0
    second = ffmpeg_mp3(second_s, 880)
    assert id3_size(second) > 10
    later = continued(second)
    assert later[0] == 0xFF and later[1] & 0xE0 == 0xE0  # an MPEG frame's sync word
    assert b"ID3" not in later[:16]
    joined = first + later
    samples = decode(joined, RATE)
    # the encoder's delay and padding per file, a frame or two (576 samples at 22.05 kHz,
    # MPEG-2): up to ~70 ms each
    assert len(samples) / RATE == pytest.approx(first_s + second_s, abs=0.16)
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


def test_oyez_mp3_keeps_speech_as_close_to_its_source_as_lames_default() -> None:
    """LAME at Oyez's quality is no further from Piper's speech than at LAME's default (3, the
    ffmpeg command's); LAME's fast settings (7 and up) are."""
    bitrate = AudioSettings().mp3_bitrate_kbps

    def distance(pcm: bytes, rate: int, quality: int) -> float:
        encoded = encode(pcm, rate, (rate, 1), bitrate, quality=quality)
        return log_spectral_distance(pcm, libav.decoded(encoded, "mp3", None, None).data, rate)

    takes = [piper_pcm(text) for text in ("Someone is at the front door.", SENTENCE)]
    oyez = [distance(pcm, rate, LAME_QUALITY) for pcm, rate in takes]
    default = [distance(pcm, rate, 3) for pcm, rate in takes]
    fast = [distance(pcm, rate, 7) for pcm, rate in takes]
    assert sum(oyez) / len(oyez) <= sum(default) / len(default) + 0.15
    assert sum(fast) / len(fast) > sum(default) / len(default) + 0.5  # the measure can tell
