"""A WAV stream's header read as it arrives, so what follows can be taken as raw PCM:
:class:`WavStreamReader`.

ffmpeg's WAV demuxer reads 64 KiB ahead of its first packet to look for S/PDIF in 16-bit PCM
(``set_spdif``, libavformat/wavdec.c): ~0.7 s of 24 kHz speech before a stream's first
packet. Raw PCM has no such wait. The layout read here is RIFF's (the ``fmt `` chunk's
format tag, channels, sample rate, bits per sample; ``data`` holds the samples; chunks are
padded to an even size), per Microsoft's "Multimedia Programming Interface and Data
Specifications 1.0" and its WAVE_FORMAT_EXTENSIBLE addendum.
"""

from __future__ import annotations

import struct

from bot.speech import AudioChunk, AudioEncoding

__all__ = ["MAX_HEADER", "WavStreamReader"]

#: Header bytes (everything before the samples) read at most before giving up on reading it.
MAX_HEADER = 64 * 1024
#: (format tag, bits per sample) → the raw encoding ffmpeg reads without a container.
_RAW: dict[tuple[int, int], AudioEncoding] = {
    (1, 16): AudioEncoding.PCM_S16LE,
    (3, 32): AudioEncoding.PCM_F32LE,
    (6, 8): AudioEncoding.PCM_ALAW,
    (7, 8): AudioEncoding.PCM_MULAW,
}
_EXTENSIBLE = 0xFFFE
#: Sizes a stream's writer puts in when it cannot know them (a pipe cannot seek back).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


class WavStreamReader:
    """Turns the pieces of a WAV stream into raw PCM pieces once its header is in.

    :meth:`feed` returns what can be handed on now: nothing while the header is incomplete,
    then raw PCM chunks (``encoding`` s16le, f32le, A-law or µ-law, with the header's sample
    rate and channels). A WAV in any other sample format, or whose header cannot be read
    within :data:`MAX_HEADER` bytes, is handed on as it came (WAV chunks, for ffmpeg's own
    demuxer). Bytes past the ``data`` chunk's stated size (when it states one) are dropped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._raw: AudioChunk | None = None  # the raw format, once known
        self._passthrough = False
        self._left: int | None = None  # samples' bytes still to come (None: up to the end)

    @property
    def decided(self) -> bool:
        """Whether the header was read (or given up on)."""
        return self._raw is not None or self._passthrough

    def feed(self, data: bytes) -> AudioChunk | None:
        """The next piece to hand on, or None while the header is still coming."""
        if self._passthrough:
            return AudioChunk(data, AudioEncoding.WAV, 0, 0)
        if self._raw is not None:
            return self._samples(data)
        self._buffer += data
        try:
            header = _header(bytes(self._buffer))
        except _NotRaw:
            return self._give_up()
        if header is None:
            return self._give_up() if len(self._buffer) > MAX_HEADER else None
        raw, start, size = header
        self._raw = raw
        self._left = None if size in _UNKNOWN_SIZES else size
        rest, self._buffer = bytes(self._buffer[start:]), bytearray()
        return self._samples(rest) if rest else None

    def _give_up(self) -> AudioChunk:
        self._passthrough = True
        whole, self._buffer = bytes(self._buffer), bytearray()
        return AudioChunk(whole, AudioEncoding.WAV, 0, 0)

    def _samples(self, data: bytes) -> AudioChunk | None:
        assert self._raw is not None
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        if not data:
            return None
        return AudioChunk(data, self._raw.encoding, self._raw.sample_rate, self._raw.channels)


class _NotRaw(Exception):
    """Not a WAV of one of the raw formats (or not a WAV)."""


def _header(data: bytes) -> tuple[AudioChunk, int, int] | None:
    """(the raw format as an empty chunk, where the samples start, the data chunk's size) of
    the WAV header at the start of ``data``; None while incomplete. Raises :class:`_NotRaw`."""
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _NotRaw
    at = 12
    raw: AudioChunk | None = None
    while len(data) >= at + 8:
        kind = data[at : at + 4]
        (size,) = struct.unpack_from("<I", data, at + 4)
        body = at + 8
        if kind == b"data":
            if raw is None:
                raise _NotRaw
            return raw, body, size
        if len(data) < body + size:
            return None
        if kind == b"fmt ":
            raw = _format(data[body : body + size])
        at = body + size + (size & 1)
    return None


def _format(fmt: bytes) -> AudioChunk:
    """The raw format a ``fmt `` chunk describes. Raises :class:`_NotRaw` for none of
    :data:`_RAW`."""
    if len(fmt) < 16:
        raise _NotRaw
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        (tag,) = struct.unpack_from("<H", fmt, 24)  # the sub-format GUID's first two bytes
    encoding = _RAW.get((tag, bits))
    if encoding is None or channels < 1 or rate < 1:
        raise _NotRaw
    return AudioChunk(b"", encoding, rate, channels)
