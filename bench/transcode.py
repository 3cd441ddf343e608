"""Benchmark: loudness normalisation and encoding of one utterance, four ways (issue #16).

- **two ffmpeg runs** (Oyez before #16): ffmpeg decodes and measures (``ebur128``), a second run
  applies the gain and the limiter, encodes and measures again; a third when the limiter took
  the result over 0.5 LU off the target.
- **one ffmpeg run**: resampling, meter, gain and limiter in this process (libavfilter through
  PyAV, :mod:`bot.audio.libav`), each limiter round measured in-process, then one ffmpeg run
  encodes.
- **no ffmpeg run**: the same, then PyAV's encoder too.
- **now**: what ``Transcoder.transcode`` does: loudness (for MP3 at the voice's own rate, no
  resampling to 48 kHz first), Opus by PyAV, MP3 by LAME through ``lameenc`` (PyAV's LAME is
  slower than the ffmpeg run), all in this process.

Each of 10 Piper sentences (PCM s16le 22.05 kHz) is made Ogg Opus (``discord``) and MP3; the
ways are run interleaved (A, B, C, D, then B, C, D, A…), and the loudness of every output is
measured afterwards by the ``ffmpeg`` command's ebur128.

Then LAME's quality settings (:data:`LAME_QUALITIES`; 3 is LAME's default, what the ffmpeg
command and Home Assistant's conversion use) encode the same sentences as Oyez's MP3 (22.05 kHz
mono, 128 kbit/s), interleaved: the time per second of audio, and how far each decoded MP3 is
from its source (log-spectral distance, ``tests.support.probe.log_spectral_distance``).

Run: ``python bench/transcode.py [--write-readme]``, which puts the tables between the README's
bench:transcode and bench:lame markers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.audio import libav, mp3  # noqa: E402
from bot.audio.transcode import (  # noqa: E402
    Transcoder,
    ffmpeg_input_args,
    find_ffmpeg,
    metered_graph,
    parse_ebur128,
    profile_spec,
)
from bot.ops import config  # noqa: E402
from bot.ops.config import AudioSettings  # noqa: E402
from bot.providers.base import SynthesisJob  # noqa: E402
from bot.speech import AudioChunk, AudioEncoding, OutputProfile  # noqa: E402
from integrations.piper import PiperProvider  # noqa: E402
from tests.support.probe import log_spectral_distance  # noqa: E402

SENTENCES = [
    "The washing machine has finished its cycle.",
    "Dinner will be served in about fifteen minutes, so please come to the kitchen.",
    "Tomorrow is bin day: the green bin goes out tonight, before ten o'clock.",
    "Someone left the back door open this afternoon.",
    "The front door has been left open for ten minutes.",
    "Good morning! It is seven o'clock and the sun is shining.",
    "Warning: the freezer temperature is above minus ten degrees.",
    "Your parcel has arrived and is waiting on the porch.",
    "Please remember to take your umbrella; rain is expected after lunch.",
    "Meeting in five minutes.",
]
PROFILES = (OutputProfile.OGG_OPUS, OutputProfile.MP3)
#: LAME's quality settings compared (0 best, 9 fastest).
LAME_QUALITIES = (2, 3, 5, 7)
#: LAME's default quality (the ffmpeg command's): the LAME table's baseline.
LAME_DEFAULT = 3
WAYS = ("two", "one", "none", "now")


class Counting(Transcoder):
    runs = 0

    async def pipe_args(
        self, graph: list[str], data: bytes, what: str, *, loglevel: str = "error"
    ) -> tuple[bytes, bytes]:
        self.runs += 1
        return await super().pipe_args(graph, data, what, loglevel=loglevel)


async def two_runs(transcoder: Counting, chunk: AudioChunk, profile: OutputProfile) -> bytes:
    """What Transcoder.transcode did before #16 for a voice's first sentence."""
    s = transcoder.settings
    pcm = await transcoder._to_canonical(
        transcoder._input(chunk.encoding, chunk.sample_rate, chunk.channels), chunk.data, "bench"
    )
    gain = min(s.loudness_target_lufs - pcm.loudness.integrated_lufs, 24.0)
    limit = pcm.loudness.true_peak_dbtp + gain > s.true_peak_dbtp
    spec = profile_spec(profile, s)
    source = ffmpeg_input_args(AudioEncoding.PCM_S16LE, pcm.sample_rate, pcm.channels)
    out = b""
    for _ in range(3):  # as _MAX_ROUNDS was
        graph = metered_graph(gain, s.true_peak_dbtp, limit=limit)
        args = [*source, "-i", "pipe:0", "-filter_complex", graph, "-map", "[out]"]
        out, stderr = await transcoder.pipe_args(
            [*args, *spec.output_args(), "pipe:1"], pcm.data, "bench", loglevel="info"
        )
        error = s.loudness_target_lufs - parse_ebur128(stderr).integrated_lufs
        if not limit or abs(error) <= 0.5:
            break
        gain += error
    return out


async def one_run(transcoder: Counting, chunk: AudioChunk, profile: OutputProfile) -> bytes:
    """Loudness in this process, then one ffmpeg run encodes."""
    pcm = await transcoder.normalise(await transcoder.analyse([chunk]))
    spec = profile_spec(profile, transcoder.settings)
    source = ffmpeg_input_args(AudioEncoding.PCM_S16LE, pcm.sample_rate, pcm.channels)
    args = [*source, "-i", "pipe:0", *spec.output_args(), "pipe:1"]
    out, _ = await transcoder.pipe_args(args, pcm.data, "bench")
    return out


async def no_run(transcoder: Counting, chunk: AudioChunk, profile: OutputProfile) -> bytes:
    """Loudness in this process, then PyAV encodes in this process too."""
    pcm = await transcoder.normalise(await transcoder.analyse([chunk]))
    spec = profile_spec(profile, transcoder.settings)
    target = (spec.muxer, spec.codec, spec.sample_rate, spec.channels)
    options = {key: str(value) for key, value in spec.codec_args}
    return await asyncio.to_thread(
        libav.encode, pcm.data, pcm.sample_rate, target, spec.bitrate_kbps, options
    )


async def now(transcoder: Counting, chunk: AudioChunk, profile: OutputProfile) -> bytes:
    """What ``Transcoder.transcode`` does now: loudness at the voice's own rate, then Opus by
    PyAV, MP3 by LAME through lameenc, both in this process."""
    return (await transcoder.transcode([chunk], profile)).data


def loudness_of(audio: bytes) -> float:
    result = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-nostats", "-i", "pipe:0"]
        + ["-af", "ebur128=framelog=quiet", "-f", "null", "-"],
        input=audio,
        capture_output=True,
        check=True,
    )
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", result.stderr.decode())[-1])


async def speech() -> list[AudioChunk]:
    settings = config.load(data_dir=Path(tempfile.mkdtemp()) / "data")
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    chunks = [(await provider.synthesize(SynthesisJob("b", t, voice))).chunk for t in SENTENCES]
    await provider.aclose()
    return chunks


Results = dict[tuple[str, OutputProfile], tuple[list[float], list[bytes], float]]


async def measure(rounds: int) -> Results:
    """Per (way, profile): wall seconds, outputs, ffmpeg runs per utterance."""
    audio = AudioSettings()
    ways = {"two": two_runs, "one": one_run, "none": no_run, "now": now}
    counters = {key: Counting(audio) for key in itertools.product(WAYS, PROFILES)}
    chunks = await speech()
    for (name, profile), counter in counters.items():  # warm: imports, threads, page cache
        await ways[name](counter, chunks[0], profile)
        counter.runs = 0
    results: dict[tuple[str, OutputProfile], tuple[list[float], list[bytes]]] = {
        key: ([], []) for key in counters
    }
    for r in range(rounds):
        for i, chunk in enumerate(chunks):
            for profile in PROFILES:
                turn = (r * len(chunks) + i) % len(WAYS)
                for name in WAYS[turn:] + WAYS[:turn]:
                    started = time.perf_counter()
                    data = await ways[name](counters[name, profile], chunk, profile)
                    results[name, profile][0].append(time.perf_counter() - started)
                    results[name, profile][1].append(data)
    count = rounds * len(chunks)
    return {key: (*results[key], counters[key].runs / count) for key in counters}


def table(results: Results, load: str) -> str:
    target = AudioSettings().loudness_target_lufs
    labels = {
        "two": "two ffmpeg runs (before #16)",
        "one": "libav loudness + one ffmpeg run",
        "none": "libav loudness + libav (PyAV) encoding",
        "now": "**now**: libav loudness + PyAV Opus / lameenc MP3 (at the voice's rate)",
    }
    rows = [
        "| profile | way | ffmpeg runs | median (ms) | p90 (ms) | within 1 LU | time ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for profile in PROFILES:
        base = statistics.median(results["two", profile][0])
        for name in WAYS:
            walls, outputs, runs = results[name, profile]
            errors = [abs(loudness_of(o) - target) for o in outputs]
            within = 100 * sum(e <= 1.0 for e in errors) / len(errors)
            median = statistics.median(walls)
            p90 = statistics.quantiles(walls, n=10)[-1]
            label = labels[name]
            rows.append(
                f"| {profile.value} | {label} | {runs:.1f} | {median * 1000:.0f} | "
                f"{p90 * 1000:.0f} | {within:.0f} % | {median / base:.2f}× |"
            )
    n = len(results["two", PROFILES[0]][0])
    return "\n".join(
        [
            f"{len(SENTENCES)} Piper sentences, {n} runs of each way per profile, interleaved; "
            f"ratios against the profile's first row, all from one run of the benchmark. "
            f"Load average {load} on the 2-core machine.",
            "",
            *rows,
        ]
    )


LameResults = dict[int, tuple[list[float], list[float]]]


def measure_lame(chunks: list[AudioChunk], rounds: int) -> LameResults:
    """Per LAME quality: milliseconds per second of audio, and log-spectral distances (dB)."""
    results: LameResults = {q: ([], []) for q in LAME_QUALITIES}
    bitrate = AudioSettings().mp3_bitrate_kbps

    def encoded(chunk: AudioChunk, quality: int) -> bytes:
        target = (chunk.sample_rate, 1)  # Oyez's: the voice's rate, mono
        return mp3.encode(chunk.data, chunk.sample_rate, target, bitrate, quality=quality)

    for quality in LAME_QUALITIES:  # warm
        encoded(chunks[0], quality)
    for r in range(rounds):
        for i, chunk in enumerate(chunks):
            turn = (r * len(chunks) + i) % len(LAME_QUALITIES)
            seconds = len(chunk.data) / 2 / chunk.sample_rate
            for quality in LAME_QUALITIES[turn:] + LAME_QUALITIES[:turn]:
                started = time.perf_counter()
                data = encoded(chunk, quality)
                results[quality][0].append((time.perf_counter() - started) * 1000 / seconds)
                if r == 0:  # the same output every round
                    decoded = libav.decoded(data, "mp3", None, None).data
                    distance = log_spectral_distance(chunk.data, decoded, chunk.sample_rate)
                    results[quality][1].append(distance)
    return results


def lame_table(results: LameResults, load: str) -> str:
    base = statistics.median(results[LAME_DEFAULT][0])
    names = {
        LAME_DEFAULT: f"{LAME_DEFAULT} (LAME's default, the ffmpeg command's)",
        mp3.LAME_QUALITY: f"**{mp3.LAME_QUALITY}: Oyez**",
    }
    rows = [
        "| LAME quality | ms per s of audio (median) | p90 | time ratio | distance from the source "
        "(dB, mean) | worst sentence (dB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for quality in LAME_QUALITIES:
        times, distances = results[quality]
        median = statistics.median(times)
        rows.append(
            f"| {names.get(quality, str(quality))} | {median:.2f} | "
            f"{statistics.quantiles(times, n=10)[-1]:.2f} | {median / base:.2f}× | "
            f"{statistics.mean(distances):.2f} | {max(distances):.2f} |"
        )
    n = len(results[LAME_DEFAULT][0])
    return "\n".join(
        [
            f"{len(SENTENCES)} Piper sentences as Oyez's MP3 (22.05 kHz mono, "
            f"{AudioSettings().mp3_bitrate_kbps} kbit/s), {n} encodings per setting, interleaved; "
            "distance = log-spectral distance of the decoded MP3 from its source, 0–10 kHz, "
            f"speech frames; ratios against quality {LAME_DEFAULT}, from one run. Load average "
            f"{load} on the 2-core machine.",
            "",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    before = os.getloadavg()[0]
    results = asyncio.run(measure(args.rounds))
    load = f"{before:.1f}–{os.getloadavg()[0]:.1f}"
    text = table(results, load)
    print(text)
    before = os.getloadavg()[0]
    lame = measure_lame(asyncio.run(speech()), args.rounds * 10)
    lame_text = lame_table(lame, f"{before:.1f}–{os.getloadavg()[0]:.1f}")
    print(lame_text)
    if args.write_readme:
        write_readme("transcode", text)
        write_readme("lame", lame_text)


if __name__ == "__main__":
    main()
