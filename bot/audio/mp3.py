"""MP3: encoding in this process (:func:`encode`), and MP3 files one after another as one
stream (:func:`continued`).

:func:`encode` is LAME through the ``lameenc`` binding, at quality 5 (:data:`LAME_QUALITY`).
``ffmpeg -c:a libmp3lame``, and so Home Assistant's conversion, uses LAME's default, 3, when no
``-q``/``-compression_level`` is given (ffmpeg's libavcodec/libmp3lame.c sets the quality only
then; LAME's lame_init_params takes 3 for an unset one); on Piper's speech at 128 kbit/s, 5 is
as close to the source (log-spectral distance) and ~20 % faster, and 7 is faster still but
measurably further from it (``bench/transcode.py`` measures them, README "Audio"). It writes
bare frames: no ID3v2 tag, no Xing/Info frame. ``bench/transcode.py`` also measures it against
the ffmpeg run and PyAV's own libmp3lame (slower than both there).

An MP3 stream is a run of self-contained frames, so MP3 files are played as one when their
frames follow each other; only a tag at the start of a later file would stand in the stream.
ffmpeg's MP3 muxer writes an ID3v2 tag first (its encoder name) and, into a pipe, no
Xing/Info frame. ID3v2 header (id3.org, ID3v2.4.0 structure §3.1): ``"ID3"``, version (2
bytes), flags (bit 4: a 10-byte footer follows the tag), then the tag's size without header
and footer in 4 bytes of 7 bits each ("synchsafe").
"""

from __future__ import annotations

__all__ = ["LAME_QUALITY", "continued", "encode", "id3_size"]

#: LAME's quality (0 best, 9 fastest): the fastest that keeps speech as close to its source as
#: LAME's default (3) does (bench/transcode.py).
LAME_QUALITY = 5

_HEADER = 10
_FOOTER_FLAG = 0x10


def id3_size(data: bytes) -> int:
    """Bytes of the ID3v2 tag at the start of ``data``, header (and footer) included; 0 when
    it starts with none (or with a damaged one)."""
    if len(data) < _HEADER or data[:3] != b"ID3" or any(b & 0x80 for b in data[6:10]):
        return 0
    size = 0
    for byte in data[6:10]:
        size = size << 7 | byte
    size += _HEADER + (_HEADER if data[5] & _FOOTER_FLAG else 0)
    return size if size <= len(data) else 0


def continued(data: bytes) -> bytes:
    """The MP3 file ``data`` as the continuation of a stream: its frames, without the ID3v2
    tag it may start with."""
    return data[id3_size(data) :]


def encode(
    data: bytes,
    sample_rate: int,
    target: tuple[int, int],
    bitrate_kbps: int,
    *,
    quality: int = LAME_QUALITY,
) -> bytes:
    """PCM s16le mono at ``sample_rate`` Hz as a CBR MP3 at ``target`` (rate in Hz, channels)
    and ``bitrate_kbps``, at LAME's ``quality`` (0-9): resampled by libswresample
    (:func:`bot.audio.libav.resampled`), then LAME. Blocks (a few ms per second of audio): call
    it in a worker thread. Raises ``RuntimeError`` (lameenc's) for settings LAME refuses."""
    import lameenc

    from bot.audio import libav

    rate, channels = target
    pcm = libav.resampled(data, sample_rate, rate, channels)
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(channels)
    encoder.set_quality(quality)
    return bytes(encoder.encode(pcm) + encoder.flush())
