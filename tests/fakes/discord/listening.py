"""What the simulated voice server received, cut into utterances and heard."""

from __future__ import annotations

from tests.fakes.discord.voice import RtpPacket, decode_opus
from tests.support.asr import Transcriber

__all__ = ["heard", "runs"]


def runs(packets: list[RtpPacket]) -> list[list[RtpPacket]]:
    """Voice frames split at the silence frames sent after each utterance."""
    out: list[list[RtpPacket]] = [[]]
    for packet in packets:
        if packet.is_silence:
            if out[-1]:
                out.append([])
        else:
            out[-1].append(packet)
    return [run for run in out if run]


def heard(run: list[RtpPacket], transcriber: Transcriber) -> str:
    """The transcript of one run of frames (48 kHz stereo → 16 kHz mono)."""
    pcm = decode_opus([p.opus for p in run])
    return transcriber.transcribe_samples(pcm.mean(axis=1)[::3])
