"""MP3 files one after another as one stream: :func:`continued`.

An MP3 stream is a run of self-contained frames, so MP3 files are played as one when their
frames follow each other; only a tag at the start of a later file would stand in the stream.
ffmpeg's MP3 muxer writes an ID3v2 tag first (its encoder name) and, into a pipe, no
Xing/Info frame. ID3v2 header (id3.org, ID3v2.4.0 structure §3.1): ``"ID3"``, version (2
bytes), flags (bit 4: a 10-byte footer follows the tag), then the tag's size without header
and footer in 4 bytes of 7 bits each ("synchsafe").
"""

from __future__ import annotations

__all__ = ["continued", "id3_size"]

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
