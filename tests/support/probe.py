"""Independent checks of encoded audio: what ffmpeg reports, Ogg/Opus structure, loudness."""

from __future__ import annotations

import re
import struct
import subprocess

from bot.audio.transcode import find_ffmpeg

__all__ = ["describe", "integrated_loudness", "ogg_packets", "opus_frame_ms", "opus_head"]


def describe(audio: bytes) -> str:
    """ffmpeg's own description of the first audio stream, e.g. 'opus, 48000 Hz, stereo'."""
    result = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-i", "pipe:0"],
        input=audio,
        capture_output=True,
        timeout=60,
    )
    found = re.search(r"Audio: (.*)", result.stderr.decode("utf-8", "replace"))
    assert found, result.stderr.decode("utf-8", "replace")
    return found.group(1)


def integrated_loudness(audio: bytes) -> float:
    """EBU R128 integrated loudness (LUFS) of decoded ``audio``, measured by ffmpeg's ebur128."""
    result = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-nostats", "-i", "pipe:0"]
        + ["-af", "ebur128=framelog=quiet", "-f", "null", "-"],
        input=audio,
        capture_output=True,
        timeout=60,
        check=True,
    )
    values = re.findall(r"I:\s+(-?[\d.]+) LUFS", result.stderr.decode())
    return float(values[-1])


def ogg_packets(data: bytes) -> list[bytes]:
    """The packets of an Ogg stream (RFC 3533), reassembled across pages."""
    packets, current, pos = [], b"", 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS", f"no Ogg page at byte {pos}"
        segments = data[pos + 26]
        table = data[pos + 27 : pos + 27 + segments]
        pos += 27 + segments
        for size in table:
            current += data[pos : pos + size]
            pos += size
            if size < 255:
                packets.append(current)
                current = b""
    return packets


def opus_head(packet: bytes) -> dict[str, int]:
    """Fields of the OpusHead identification header (RFC 7845 §5.1)."""
    assert packet[:8] == b"OpusHead", packet[:8]
    channels, pre_skip, input_rate = struct.unpack_from("<BHI", packet, 9)
    return {"channels": channels, "pre_skip": pre_skip, "input_sample_rate": input_rate}


def opus_frame_ms(packet: bytes) -> float:
    """Duration of one Opus frame from the packet's TOC byte (RFC 6716 §3.1)."""
    config = packet[0] >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms
        return (10.0, 20.0, 40.0, 60.0)[config % 4]
    if config < 16:  # hybrid: 10, 20 ms
        return (10.0, 20.0)[config % 2]
    return (2.5, 5.0, 10.0, 20.0)[config % 4]  # CELT-only
