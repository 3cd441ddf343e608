"""Benchmark: resident memory of a long-running Oyez after many long texts, against the unbounded
code path measured in the same run.

Each code path runs in a process of its own, as ``oyez run`` would: one ``SpeechPipeline`` (the
cache off, so that every text is synthesized), the local Piper voice. It says one short
sentence (RSS then is the reference), then ``--texts`` texts of up to ``max_text_length``
characters, half of them without any sentence or clause break; RSS after them, and the peak.

- Oyez: Piper gets pieces of at most ``PIECE_MAX_CHARS`` characters, each run shrinks
  onnxruntime's arena, and glibc's ``malloc_trim`` returns the freed pages once Piper has
  been idle for ``TRIM_IDLE_S`` (RSS is read that long after the last text, on both paths).
- Baseline (the code before issue #14): each sentence in one inference, however long, the arena
  keeping its peak.

The goal (issue #14): RSS after 100 texts ≤ RSS after one short sentence + 250 MiB. The paths
alternate (baseline, Oyez, baseline, …) for ``--runs`` pairs. Linux only (``/proc``). Run:
``make bench``; ``--write-readme`` puts the table into README.md between the bench:memory
markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.speech import SpeechRequest  # noqa: E402
from bot.synthesis.pipeline import SpeechPipeline  # noqa: E402

GOAL_MIB = 250
SHORT = "The washing machine has finished."
WORDS = (
    "please remember that the bins go out tonight and the recycling goes out tomorrow morning "
    "before eight so put the green box by the gate with the blue bag next to it while the "
    "council collects garden waste every other week unless it is a bank holiday when they come "
    "a day later and anything left behind waits for the next round of the lorry in our street"
).split()
PATHS = {"baseline": "before #14: each sentence whole, arena kept", "oyez": "Oyez"}


def texts(count: int, max_chars: int, seed: int = 14) -> list[str]:
    """``count`` texts of 10 %-100 % of ``max_chars`` (every tenth the longest); odd ones have a
    comma every 12 words and a full stop every 30, even ones no break at all."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        length = max_chars if index % 10 == 0 else rng.randint(max_chars // 10, max_chars)
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < length - 14:  # room for a full stop and a comma
            word = rng.choice(WORDS)
            if index % 2 and words and len(words) % 30 == 0:
                words[-1] += "."
                word = word.capitalize()
            elif index % 2 and words and len(words) % 12 == 0:
                words[-1] += ","
            words.append(word)
        made.append(" ".join(words).capitalize() + ".")
    return made


def _status(field: str) -> float:
    """A ``/proc/self/status`` figure in MiB (``VmRSS``: now; ``VmHWM``: the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status: this benchmark needs Linux")


def _unbounded() -> None:
    """The Piper code path before #14: no pieces, no arena shrinkage, no trim."""
    import onnxruntime

    from integrations.piper import engine, provider

    provider.PIECE_MAX_CHARS = 10**9  # split_pieces then gives the sentences, as Piper splits
    engine._IDLE_TRIM = None
    engine._SHRINK = onnxruntime.RunOptions()


async def measure(path: str, count: int) -> dict[str, Any]:
    """In this process: RSS after one short sentence, then after ``count`` long texts."""
    if path == "baseline":
        _unbounded()
    data = Path(tempfile.mkdtemp()) / "data"
    settings = config.load(data_dir=data, cache={"enabled": False})
    pipeline = SpeechPipeline(settings)
    from integrations.piper import engine

    settle_s = engine.TRIM_IDLE_S + 0.5  # both paths idle as long, once each: like with like
    try:
        await pipeline.speak(SpeechRequest(text=SHORT))
        await asyncio.sleep(settle_s)
        short = _status("VmRSS")
        started, audio_s = time.perf_counter(), 0.0
        for text in texts(count, settings.max_text_length):
            audio_s += (await pipeline.speak(SpeechRequest(text=text))).duration_s
        wall = time.perf_counter() - started
        await asyncio.sleep(settle_s)  # a long-running Oyez, a moment after its last text
    finally:
        await pipeline.aclose()
    return {
        "short": short,
        "after": _status("VmRSS"),
        "peak": _status("VmHWM"),
        "wall": wall,
        "audio": audio_s,
    }


def run(path: str, count: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", path, "--texts", str(count)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(results: dict[str, list[dict[str, Any]]], count: int, load: tuple[float, float]) -> str:
    def median(path: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[path]))

    max_chars = config.load().max_text_length
    rows = []
    for path, label in PATHS.items():
        short, after = median(path, "short"), median(path, "after")
        growth = after - short
        wall, audio = median(path, "wall"), median(path, "audio")
        rows.append(
            f"| {label} | {short:.0f} | {after:.0f} | {growth:+.0f} | {median(path, 'peak'):.0f} "
            f"| {wall:.0f} ({wall / audio:.3f}) | {'yes' if growth <= GOAL_MIB else 'no'} |"
        )
    runs = len(results["oyez"])
    growth_ratio = (median("oyez", "after") - median("oyez", "short")) / max(
        median("baseline", "after") - median("baseline", "short"), 1.0
    )
    wall_ratio = median("oyez", "wall") / median("baseline", "wall")
    return "\n".join(
        [
            f"{count} texts of {max_chars // 10}-{max_chars} characters (`max_text_length`; half "
            "without any sentence or clause break) after one short sentence, each code path in "
            f"a process of its own (`SpeechPipeline.speak`, the cache off), median of {runs} "
            f"run(s), alternating; 2-core machine, load average {load[0]:.1f} before and "
            f"{load[1]:.1f} after:",
            "",
            "| code path | RSS after one short sentence (MiB) | RSS after the texts (MiB) "
            f"| growth (MiB) | peak RSS (MiB) | synthesis wall, s (real-time factor) "
            f"| goal: growth ≤ {GOAL_MIB} MiB |",
            "|---|---:|---:|---:|---:|---:|:-:|",
            *rows,
            "",
            f"Oyez's growth is {growth_ratio:.2f}× the baseline's, at {wall_ratio:.2f}× its "
            "synthesis time.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1, help="pairs of runs (baseline, Oyez)")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.texts))))
        return
    before = os.getloadavg()[0]
    results: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
    for _ in range(args.runs):
        for path in PATHS:
            results[path].append(run(path, args.texts))
            print(path, results[path][-1], file=sys.stderr)
    result = table(results, args.texts, (before, os.getloadavg()[0]))
    print(result)
    if args.write_readme:
        write_readme("memory", result)


if __name__ == "__main__":
    main()
