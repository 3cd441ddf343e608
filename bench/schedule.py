"""Benchmark: start-time error of scheduled alerts on Discord.

Oyez's scheduler (:mod:`bot.scheduler`) fires one-shot alerts into a voice channel of the
simulated Discord on 127.0.0.1 (tests/fakes/discord), through the real discord.py client
running Oyez's bot and the local voice. Start-time error = the first RTP packet of an alert
reaching the simulated voice server − the alert's scheduled instant. 20 alerts, each a
different sentence, a few seconds apart; the first one also joins the voice channel. With
pre-synthesis (the default) each alert's audio is made ahead into the audio cache; the baseline,
measured in the same run on a fresh data directory, is the same alerts synthesized when they
fire. Goal: p95 ≤ 100 ms.

Run ``make bench``; ``--write-readme`` puts the table into README.md between the bench:schedule
markers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.announce.announcer import Announcer  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.schedules.model import Schedule  # noqa: E402
from bot.schedules.scheduler import Scheduler  # noqa: E402
from bot.schedules.store import ScheduleBook  # noqa: E402
from bot.speech import SpeechRequest  # noqa: E402
from bot.synthesis.pipeline import SpeechPipeline  # noqa: E402
from integrations.discord.bot import OyezBot  # noqa: E402
from integrations.discord.service import DiscordSink  # noqa: E402
from integrations.discord.settings import DiscordSettings  # noqa: E402
from tests.fakes.discord import (  # noqa: E402
    GUILD_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    client_options,
    running,
)
from tests.fakes.discord.client import patched_discord  # noqa: E402

THINGS = ("The kitchen timer", "The washing machine", "The bread", "The tea", "The bath")
STATES = ("is done.", "needs you.", "is ready now.", "wants attention.")
FIRST_AFTER_S = 8.0  # the first alert, after start (time to synthesize the first ones ahead)


def messages(count: int, variant: str) -> list[str]:
    return [
        f"{variant} {i + 1}. {THINGS[i % len(THINGS)]} {STATES[(i // len(THINGS)) % 4]}"
        for i in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(count: int, spacing_s: float, ahead: bool, variant: str) -> list[float]:
    """Start-time errors (seconds) of ``count`` alerts ``spacing_s`` apart."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = config.load(data_dir=Path(tmp) / "data", cache={"enabled": True})
        pipeline = SpeechPipeline(settings)
        await pipeline.speak(SpeechRequest(text="Warming up."))  # the model loaded, as in a bot
        book = ScheduleBook(settings.data_dir)
        start = time.time() + FIRST_AFTER_S
        instants = [datetime.fromtimestamp(round(start + i * spacing_s), UTC) for i in range(count)]
        for i, (at, text) in enumerate(zip(instants, messages(count, variant), strict=True)):
            await book.add(
                Schedule(
                    name=f"alert-{i}",
                    at=at,
                    message=text,
                    discord=[{"guild_id": int(GUILD_ID), "channel_id": int(VOICE_CHANNEL_ID)}],
                ),
                "cli",
                datetime.now(UTC),
            )
        try:
            async with FakeDiscord() as fake:
                with patched_discord(fake):
                    bot = OyezBot(pipeline, DiscordSettings(), **client_options())
                    async with running(bot):
                        announcer = Announcer(settings, pipeline.prepare)
                        announcer.add_sink(DiscordSink(bot))
                        scheduler = Scheduler(
                            settings,
                            announcer,
                            book,
                            synthesize=pipeline.speak if ahead else None,
                        )
                        await scheduler.start()
                        task = asyncio.create_task(scheduler.serve())
                        # wall clock → the voice server's monotonic clock
                        offset = time.monotonic() - time.time()
                        last = f"schedule:alert-{count - 1}:{int(instants[-1].timestamp())}"
                        await fake.wait_for(
                            lambda: announcer.status(last) is not None,
                            timeout_s=FIRST_AFTER_S + count * spacing_s + 30,
                            what="the last alert",
                        )
                        status = announcer.status(last)
                        assert status is not None
                        await asyncio.wait_for(status.done.wait(), 60)
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        await scheduler.stop()
                        await announcer.aclose()
                        frames = fake.voice.voice_frames()
        finally:
            await pipeline.aclose()
    errors = []
    for at in instants:
        due = at.timestamp() + offset
        first = next(p for p in frames if p.time >= due - 1.0)
        errors.append(first.time - due)
    return errors


def table(ahead: list[float], baseline: list[float], spacing_s: float) -> str:
    rows = [
        ("with pre-synthesis (audio made 30 s ahead, played from the cache)", ahead),
        ("baseline: synthesized when the alert fires", baseline),
    ]
    lines = [
        f"{len(ahead)} one-shot alerts {spacing_s:g} s apart into a Discord voice channel (the "
        "first one joins it), local voice, 2-core machine; start-time error = first RTP packet "
        "− scheduled instant, goal p95 ≤ 100 ms:",
        "",
        "| | p50 (ms) | p95 (ms) | max (ms) | first alert (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in rows:
        ms = [1000 * v for v in values]
        lines.append(
            f"| {name} | {statistics.median(ms):.0f} | {percentile(ms, 0.95):.0f} "
            f"| {max(ms):.0f} | {ms[0]:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--spacing-s", type=float, default=4.0)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    ahead = asyncio.run(measure(args.alerts, args.spacing_s, True, "Alert"))
    baseline = asyncio.run(measure(args.alerts, args.spacing_s, False, "Notice"))
    result = table(ahead, baseline, args.spacing_s)
    print(result)
    if args.write_readme:
        write_readme("schedule", result)


if __name__ == "__main__":
    main()
