"""Benchmark: how soon a compressed stream's first Opus packet comes out of Oyez's stream encoder.

A provider's stream arrives in pieces; :class:`bot.audio.live.OpusStreamEncoder` hands it to
one ffmpeg, which Oyez starts with :data:`bot.audio.live.STREAM_PROBE` (probe no more than the
first frame), and a WAV stream's samples go in as raw PCM (:mod:`bot.audio.wav`). The baseline
is the same encoder with ffmpeg's default probing and ffmpeg's own WAV reader (what Oyez did
before). Each run feeds one Piper sentence, encoded in the stream's format, in pieces of
:data:`PIECE_S` seconds of audio, one every :data:`PIECE_S` seconds (a provider sending at the
pace of playback), into an encoder whose ffmpeg was started beforehand (as Oyez keeps one
ready): the time from the first piece to the first packet. Runs alternate (Oyez, baseline,
Oyez…), like against like (both warm: ffmpeg started, the format seen before timing).

Run: ``python bench/stream_start.py [--runs N] [--write-readme]``, which puts the table
between the README's bench:stream-start markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.audio import live  # noqa: E402
from bot.audio.live import OpusStreamEncoder, StreamFormat  # noqa: E402
from bot.audio.transcode import Transcoder  # noqa: E402
from bot.ops.config import AudioSettings  # noqa: E402
from bot.speech import AudioChunk, AudioEncoding  # noqa: E402
from tests.fakes.audio import encode_with_ffmpeg, wav_bytes  # noqa: E402
from tests.support.speech import piper_pcm  # noqa: E402

#: Seconds of audio per piece, and between two pieces.
PIECE_S = 0.2
SENTENCE = "The parcel has arrived at the front door, please collect it before the rain."
#: The formats an OpenAI-compatible server streams that go through ffmpeg (``pcm`` is raw).
FORMATS = {AudioEncoding.MP3: "mp3", AudioEncoding.AAC: "aac", AudioEncoding.WAV: "wav"}
OYEZ_PROBE = live.STREAM_PROBE


class _AsBefore(OpusStreamEncoder):
    """The baseline: a WAV stream left to ffmpeg's WAV reader (and, by ``STREAM_PROBE``,
    ffmpeg's default probing)."""

    async def feed(self, chunk: AudioChunk) -> None:
        await self._encode(chunk)  # without Oyez's WAV header reader


async def first_packet_s(data: bytes, encoding: AudioEncoding, seconds: float, oyez: bool) -> float:
    """Seconds from the first piece fed to the first packet out."""
    live.STREAM_PROBE = OYEZ_PROBE if oyez else ()
    out: list[float] = []
    kind = OpusStreamEncoder if oyez else _AsBefore
    encoder = kind(
        Transcoder(AudioSettings()), lambda _: out.append(time.perf_counter()), gain_db=0.0
    )
    expected = StreamFormat(encoding, 0, 0)
    if encoding is not AudioEncoding.WAV or not oyez:
        await encoder.start(expected)  # ready, as Oyez keeps it (a WAV's format is its header's)
    size = max(int(len(data) * PIECE_S / seconds), 1)
    started = time.perf_counter()
    for at in range(0, len(data), size):
        await encoder.feed(AudioChunk(data[at : at + size], encoding, 0, 0))
        await asyncio.sleep(PIECE_S)
    await encoder.finish()
    return out[0] - started if out else float("nan")


async def measure(runs: int) -> dict[str, dict[str, list[float]]]:
    speech, rate = piper_pcm(SENTENCE)
    seconds = len(speech) / 2 / rate
    results: dict[str, dict[str, list[float]]] = {}
    for encoding, container in FORMATS.items():
        if container == "wav":
            data = wav_bytes(speech, rate)
        else:
            data = await encode_with_ffmpeg(speech, rate, container)
        for oyez in (True, False):  # warm: ffmpeg's binary and this format, both ways
            await first_packet_s(data, encoding, seconds, oyez)
        ours: list[float] = []
        before: list[float] = []
        for _ in range(runs):
            ours.append(await first_packet_s(data, encoding, seconds, oyez=True))
            before.append(await first_packet_s(data, encoding, seconds, oyez=False))
        results[container] = {"oyez": ours, "baseline": before}
    live.STREAM_PROBE = OYEZ_PROBE
    return results


def table(results: dict[str, dict[str, list[float]]], runs: int, load: float) -> str:
    lines = [
        f"A Piper sentence streamed in {PIECE_S:g} s pieces at the pace of playback into Oyez's "
        f"stream encoder (its ffmpeg started beforehand), {runs} runs each, Oyez and the "
        f"baseline alternating, {os.cpu_count()}-core machine (load average {load:.2f} at the "
        "start); time from the first piece to the first Opus packet. Baseline: the same "
        "encoder with ffmpeg's default probing, and a WAV stream read by ffmpeg's WAV reader "
        "(Oyez before); Oyez's WAV figure includes spawning ffmpeg once the header is read:",
        "",
        "| stream | Oyez p50 (s) | baseline p50 (s) | Oyez ÷ baseline |",
        "|---|---:|---:|---:|",
    ]
    for container, found in results.items():
        ours, theirs = statistics.median(found["oyez"]), statistics.median(found["baseline"])
        lines.append(f"| {container} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    result = table(asyncio.run(measure(args.runs)), args.runs, load)
    print(result)
    if args.write_readme:
        write_readme("stream-start", result)


if __name__ == "__main__":
    main()
