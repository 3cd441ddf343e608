"""Ogg Opus read back into Opus packets (RFC 7845), whole or as it arrives.

The one reader of Oyez's Ogg Opus: the live encoder's output (:mod:`bot.audio.live`), cached
utterances and the Discord player's pass-through (:mod:`integrations.discord.audio`).
"""

from __future__ import annotations

import struct

from bot.errors import AudioError

__all__ = ["OggOpusReader", "opus_packets"]

#: Opus granule positions count samples at 48 kHz, whatever the input rate (RFC 7845 §4).
_GRANULE_RATE = 48_000
_OGG_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, page, crc, n


class OggOpusReader:
    """Cuts an Ogg Opus byte stream into its Opus audio packets, fed piece by piece.

    The identification and comment headers (``OpusHead``, ``OpusTags``, RFC 7845 §5) are left
    out, and so are empty packets; packets spanning pages are joined. ``duration_s`` is the
    audio up to the last complete page (seconds), from its granule position and the pre-skip.
    Chained streams (Ogg files one after another) are read as one: each one's headers are
    skipped. Raises :class:`AudioError` on bytes that are not Ogg.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._packet = bytearray()
        self._pre_skip = 0
        self._granule = 0
        self._finished_s = 0.0  # audio of earlier chained streams

    @property
    def duration_s(self) -> float:
        return self._finished_s + max(self._granule - self._pre_skip, 0) / _GRANULE_RATE

    def feed(self, data: bytes) -> list[bytes]:
        """The audio packets completed by ``data``, in order."""
        self._buffer += data
        packets: list[bytes] = []
        while len(self._buffer) >= _OGG_HEADER.size:
            capture, _, _, granule, *_, segments = _OGG_HEADER.unpack_from(self._buffer)
            if capture != b"OggS":
                raise AudioError("the audio is not an Ogg stream")
            header = _OGG_HEADER.size + segments
            if len(self._buffer) < header:
                break
            lacing = self._buffer[_OGG_HEADER.size : header]
            end = header + sum(lacing)
            if len(self._buffer) < end:
                break
            at = header
            for size in lacing:
                self._packet += self._buffer[at : at + size]
                at += size
                if size < 255:  # a lacing value under 255 ends a packet
                    self._take(bytes(self._packet), packets)
                    self._packet.clear()
            if granule >= 0:  # -1: no packet ends on this page
                self._granule = granule
            del self._buffer[:end]
        return packets

    def _take(self, packet: bytes, packets: list[bytes]) -> None:
        if packet.startswith(b"OpusHead"):
            self._finished_s = self.duration_s
            self._granule = 0
            self._pre_skip = int.from_bytes(packet[10:12], "little")
        elif packet and not packet.startswith(b"OpusTags"):
            packets.append(packet)


def opus_packets(ogg_opus: bytes) -> list[bytes]:
    """The Opus audio packets of a complete Ogg Opus file (20 ms each in the discord profile)."""
    return OggOpusReader().feed(ogg_opus)
