"""Independent checks of encoded audio: what ffmpeg reports, Ogg/Opus structure, loudness."""

from __future__ import annotations

import re
import struct
import subprocess

from bot.audio.transcode import find_ffmpeg

__all__ = [
    "describe",
    "integrated_loudness",
    "log_spectral_distance",
    "ogg_packets",
    "opus_frame_ms",
    "opus_head",
]

#: Samples a decoder may put before the audio (LAME's encoder delay and padding: 576 + 529
#: at the start, more with the resampler's).
_MAX_DELAY = 3000


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


def log_spectral_distance(
    reference: bytes, decoded: bytes, sample_rate: int, *, top_hz: float = 10_000.0
) -> float:
    """Mean log-spectral distance (dB) of ``decoded`` from ``reference`` (both PCM s16le mono at
    ``sample_rate`` Hz; ``decoded`` may start up to 3,000 samples late, as a lossy codec's
    output does): per frame of ~23 ms (Hann window, half overlap) within 40 dB of the loudest,
    the RMS over frequencies up to ``top_hz`` of 20·log10 of the magnitude ratio, averaged over
    frames. 0 is identical; a coarser codec setting gives more."""
    import numpy as np

    x = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    y = np.frombuffer(decoded, dtype="<i2").astype(np.float64)
    window = min(len(x), 20_000)
    lags = np.correlate(y[: window + _MAX_DELAY], x[:window], mode="valid")
    lag = int(np.argmax(lags))
    y = y[lag : lag + len(x)]
    x = x[: len(y)]
    size = 1 << round(np.log2(sample_rate * 0.023))
    hann = np.hanning(size)
    starts = range(0, len(x) - size, size // 2)
    spectra_x = np.array([np.abs(np.fft.rfft(x[i : i + size] * hann)) for i in starts])
    spectra_y = np.array([np.abs(np.fft.rfft(y[i : i + size] * hann)) for i in starts])
    energy = (spectra_x**2).sum(axis=1)
    speech = energy > energy.max() * 1e-4
    band = np.fft.rfftfreq(size, 1 / sample_rate) < top_hz
    ratio = (spectra_x[speech][:, band] + 1e-3) / (spectra_y[speech][:, band] + 1e-3)
    return float(np.sqrt(((20 * np.log10(ratio)) ** 2).mean(axis=1)).mean())


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
