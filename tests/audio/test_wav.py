"""A WAV stream's header read as it comes (bot/audio/wav.py): the samples after it handed on
as raw PCM from the first piece that has them; any other WAV handed on whole, untouched."""

from __future__ import annotations

import struct

import pytest

from bot.audio.wav import MAX_HEADER, WavStreamReader
from bot.speech import AudioChunk, AudioEncoding

SAMPLES = bytes(range(256)) * 40  # 10,240 bytes


def chunk(kind: bytes, body: bytes) -> bytes:
    padding = b"\0" if len(body) % 2 else b""
    return kind + struct.pack("<I", len(body)) + body + padding


def fmt(tag: int, channels: int, rate: int, bits: int, extensible_tag: int | None = None) -> bytes:
    align = channels * bits // 8
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if extensible_tag is not None:
        body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_tag) + b"\0" * 14
    return chunk(b"fmt ", body)


def wav(*chunks: bytes, data_size: int | None = None, samples: bytes = SAMPLES) -> bytes:
    size = len(samples) if data_size is None else data_size
    body = b"WAVE" + b"".join(chunks) + b"data" + struct.pack("<I", size) + samples
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + body


def read(data: bytes, piece: int) -> list[AudioChunk]:
    reader = WavStreamReader()
    out = []
    for at in range(0, len(data), piece):
        got = reader.feed(data[at : at + piece])
        if got is not None:
            out.append(got)
    return out


@pytest.mark.parametrize("piece", [1, 7, 44, 4096, 1 << 20])
def test_the_samples_after_the_header_come_out_as_raw_pcm(piece: int) -> None:
    data = wav(chunk(b"LIST", b"INFOISFT\x03\0\0\0ab\0"), fmt(1, 1, 24_000, 16))
    out = read(data, piece)
    assert b"".join(c.data for c in out) == SAMPLES
    assert {(c.encoding, c.sample_rate, c.channels) for c in out} == {
        (AudioEncoding.PCM_S16LE, 24_000, 1)
    }
    header = len(data) - len(SAMPLES)
    assert len(out) == len(range(header // piece * piece, len(data), piece))  # none held back


@pytest.mark.parametrize(
    ("tag", "bits", "extensible_tag", "encoding"),
    [
        (3, 32, None, AudioEncoding.PCM_F32LE),
        (6, 8, None, AudioEncoding.PCM_ALAW),
        (7, 8, None, AudioEncoding.PCM_MULAW),
        (0xFFFE, 16, 1, AudioEncoding.PCM_S16LE),
        (0xFFFE, 32, 3, AudioEncoding.PCM_F32LE),
    ],
)
def test_each_raw_format_is_read_from_fmt(
    tag: int, bits: int, extensible_tag: int | None, encoding: AudioEncoding
) -> None:
    (out,) = read(wav(fmt(tag, 2, 48_000, bits, extensible_tag)), 1 << 20)
    assert (out.encoding, out.sample_rate, out.channels, out.data) == (encoding, 48_000, 2, SAMPLES)


def test_bytes_past_a_stated_data_size_are_dropped() -> None:
    out = read(wav(fmt(1, 1, 16_000, 16), data_size=1000), 300)
    assert b"".join(c.data for c in out) == SAMPLES[:1000]


@pytest.mark.parametrize(
    "data",
    [
        wav(fmt(1, 1, 24_000, 24)),  # 24-bit PCM: ffmpeg reads it
        wav(fmt(0xFFFE, 1, 24_000, 24, extensible_tag=1)),
        wav(fmt(85, 1, 24_000, 0)),  # MP3 in a WAV
        wav(chunk(b"LIST", b"x" * 10)),  # data with no fmt before it
        b"OggS" + SAMPLES,  # not a WAV
        wav(chunk(b"JUNK", b"\0" * 2 * MAX_HEADER), fmt(1, 1, 24_000, 16)),  # too long
    ],
    ids=["24-bit", "extensible-24-bit", "mp3", "no-fmt", "not-riff", "long-header"],
)
def test_any_other_stream_is_handed_on_as_it_came(data: bytes) -> None:
    out = read(data, 1000)
    assert {c.encoding for c in out} == {AudioEncoding.WAV}
    assert b"".join(c.data for c in out) == data  # nothing lost, nothing changed
