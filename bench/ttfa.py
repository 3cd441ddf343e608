"""Benchmark: time to first audio of a one-sentence ``/say`` with the local voice.

Oyez's Discord bot runs with the real discord.py client against the simulated Discord on
127.0.0.1 (tests/fakes/discord). Time to first audio = the simulated server sends
INTERACTION_CREATE → the first RTP packet reaches its UDP voice server. 20 runs, each a different
sentence (the audio cache is off, so every run synthesizes); the first run also joins the voice
channel, the others find the bot there. The baseline, measured in the same run, is the bare
synthesis + transcoding of the same sentences (``SpeechPipeline.speak``), the floor that Discord's
round trips add to.

Run ``make bench``; ``--write-readme`` puts the table into README.md between the bench:ttfa
markers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot import config  # noqa: E402
from bot.pipeline import SpeechPipeline  # noqa: E402
from bot.speech import SpeechRequest  # noqa: E402
from integrations.discord.bot import DiscordSettings, OyezBot  # noqa: E402
from tests.fakes.discord import ALICE, FakeDiscord, client_options, running  # noqa: E402
from tests.fakes.discord.client import patched_discord  # noqa: E402

SUBJECTS = (
    "The washing machine",
    "The front door",
    "The kitchen timer",
    "The garage",
    "The dishwasher",
)
EVENTS = ("has finished.", "needs attention.", "is open.", "wants you now.")


def sentences(count: int) -> list[str]:
    return [
        f"{SUBJECTS[i % len(SUBJECTS)]} {EVENTS[(i // len(SUBJECTS)) % len(EVENTS)]}"
        for i in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(runs: int) -> tuple[list[float], list[float]]:
    texts = sentences(runs)
    with tempfile.TemporaryDirectory() as tmp:
        settings = config.load(data_dir=Path(tmp) / "data", cache={"enabled": False})
        pipeline = SpeechPipeline(settings)
        try:
            # baseline: synthesis + transcoding alone, warm
            await pipeline.speak(SpeechRequest(text="Warming up."))
            baseline = []
            for text in texts:
                started = time.perf_counter()
                await pipeline.speak(SpeechRequest(text=text + " "))  # distinct from the runs
                baseline.append(time.perf_counter() - started)

            ttfa = []
            async with FakeDiscord() as fake:
                with patched_discord(fake):
                    client = OyezBot(pipeline, DiscordSettings(), **client_options())
                    async with running(client, fake):
                        for text in texts:
                            before = len(fake.voice.packets)
                            sent = await fake.send_interaction("say", {"text": text}, user=ALICE)
                            first = await fake.wait_for(
                                lambda before=before: fake.voice.packets[before:],
                                timeout_s=30,
                                what="the first RTP packet",
                            )
                            ttfa.append(first[0].time - sent.time)
                            await fake.wait_for(  # let it finish before the next
                                lambda sent=sent: [
                                    f
                                    for f in fake.followups_to(sent)
                                    if "Said" in (f.content or "")
                                ],
                                timeout_s=30,
                                what="the reply",
                            )
                            await asyncio.sleep(0.2)
        finally:
            await pipeline.aclose()
    return ttfa, baseline


def table(ttfa: list[float], baseline: list[float]) -> str:
    warm = ttfa[1:]
    rows = [
        ("`/say`, first run (joins the voice channel)", [ttfa[0]]),
        ("`/say`, bot already in the channel", warm),
        ("`/say`, all runs", ttfa),
        ("baseline: synthesis + transcoding alone", baseline),
    ]
    lines = [
        f"{len(ttfa)} one-sentence `/say` with the local voice, 2-core machine; time from "
        "INTERACTION_CREATE to the first RTP packet:",
        "",
        "| | p50 (s) | p95 (s) |",
        "|---|---:|---:|",
    ]
    for name, values in rows:
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | {percentile(values, 0.95):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    ttfa, baseline = asyncio.run(measure(args.runs))
    result = table(ttfa, baseline)
    print(result)
    if args.write_readme:
        write_readme("ttfa", result)


if __name__ == "__main__":
    main()
