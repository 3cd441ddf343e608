"""Benchmark: time to first audio of ``/say`` on Discord, four ways.

Oyez's Discord bot runs with the real discord.py client against the simulated Discord on
127.0.0.1 (tests/fakes/discord). Time to first audio (TTFA) = the simulated server sends
INTERACTION_CREATE → the first RTP packet reaches its UDP voice server. Each scenario has a
warm-up ``/say`` (the bot joins the voice channel, the voice is loaded), then ``--runs`` measured
ones; each is cut with ``/stop`` once its first packet has arrived.

1. **cache hit**: a sentence said before (the audio cache on).
2. **local voice, one sentence**: the cache off, a different sentence each run. Baseline, in the
   same run: synthesis + transcoding of the same sentences alone (``SpeechPipeline.speak``).
3. **local voice, a 500-word text**, spoken sentence by sentence. Baseline, in the same run:
   synthesis of the whole text in one piece (what playing it as one file would wait for),
   ``--baseline-runs`` times (each takes ~15 s).
4. **streaming provider**: the simulated Together API streaming raw PCM (``stream: true``),
   ``CHUNK_S`` of audio per event at the pace of playback. Compared with the time from
   INTERACTION_CREATE to the simulated server's first event of the same run.

Run ``make bench``; ``--write-readme`` puts the table into README.md between the bench:ttfa
markers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.speech import SpeechRequest  # noqa: E402
from bot.synthesis.pipeline import SpeechPipeline  # noqa: E402
from bot.synthesis.sentences import split_sentences  # noqa: E402
from integrations.discord.bot import OyezBot  # noqa: E402
from integrations.discord.settings import DiscordSettings  # noqa: E402
from tests.fakes.discord import ALICE, FakeDiscord, client_options, running  # noqa: E402
from tests.fakes.discord.client import patched_discord  # noqa: E402
from tests.fakes.discord.server import SentInteraction  # noqa: E402
from tests.support.timing import TimedTogether  # noqa: E402

#: Seconds of audio in each event of the simulated streaming API (one event per CHUNK_S).
CHUNK_S = 0.3
#: Seconds of the 500-word text listened to for gaps between its sentences.
LISTEN_S = 15.0

SUBJECTS = (
    "The washing machine",
    "The front door",
    "The kitchen timer",
    "The garage",
    "The dishwasher",
)
EVENTS = ("has finished.", "needs attention.", "is open.", "wants you now.")

LONG_TEXT = (
    "Good evening, and welcome to the household news for this week. The weather has been "
    "kind to us, with three dry days in a row and a light wind from the west. On Monday the "
    "recycling bins will be collected early, so please put them out on Sunday night before "
    "you go to bed. The blue bin takes paper and cardboard, while the green one is for glass "
    "bottles and jars. Dr. Miller from the clinic called to say that the flu vaccinations are "
    "available from Tuesday, e.g. for the children and for anyone over sixty. Appointments "
    "start at 8.30 in the morning and run until noon. The school trip to the science museum "
    "is confirmed for Thursday. The coach leaves at a quarter past eight from the main gate, "
    "and it will be back by four in the afternoon. Each child needs a packed lunch, a bottle "
    "of water and a coat in case it rains. The library has extended its opening hours, and "
    "it now stays open until seven on weekdays. There is a new reading group on Wednesday "
    "evenings, and this month they are reading a short novel about a lighthouse keeper. In "
    "the garden, the tomatoes are finally turning red, and the beans need picking every "
    "other day. Please remember to water the pots on the terrace, because they dry out "
    "quickly in the sun. The lawn mower has been repaired, and it is back in the shed. The "
    "car is due for its annual service on the twelfth, so we will need to share the bikes "
    "for a day. The garage door still makes a strange noise when it opens, and a technician "
    "will come to look at it next week. The plumber also confirmed that he will fix the "
    "dripping tap in the bathroom on Monday. Grandma arrives on Friday evening by train. Her "
    "train is scheduled to reach the central station at 6.45, and somebody should meet her "
    "on the platform with an umbrella. She will stay for ten days, and she has asked for "
    "her favourite apple cake on Sunday. The shopping list for the weekend includes flour, "
    "butter, eggs, apples, cinnamon and a large bag of potatoes. We are also out of coffee, "
    "washing powder and batteries for the kitchen clock. The neighbours have invited us to "
    "a barbecue on Saturday afternoon. They asked us to bring a salad and something to drink, "
    "and the children are welcome to play in their garden. The internet provider will "
    "upgrade the line on Tuesday between nine and eleven, so the connection may drop for a "
    "few minutes. If you are working from home that morning, plan your calls for the "
    "afternoon. The electricity bill came in lower than last month, thanks to the new "
    "lamps in the hallway and the living room. Finally, the cat has discovered how to open "
    "the kitchen cupboard, so please keep the treats on the top shelf. That is all for this "
    "week. Have a lovely evening, sleep well, and see you all at breakfast tomorrow."
)


def sentences(count: int, offset: int = 0) -> list[str]:
    return [
        f"{SUBJECTS[i % len(SUBJECTS)]} {EVENTS[(i // len(SUBJECTS)) % len(EVENTS)]}"
        for i in range(offset, offset + count)
    ]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@asynccontextmanager
async def discord_bot(pipeline: SpeechPipeline) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        with patched_discord(fake):
            client = OyezBot(pipeline, DiscordSettings(), **client_options())
            async with running(client):
                yield fake


async def say(fake: FakeDiscord, text: str, **options: Any) -> tuple[float, float]:
    """``/say``, cut with ``/stop`` at its first RTP packet: (INTERACTION_CREATE time, first
    packet time), both ``time.monotonic()``."""
    before = len(fake.voice.packets)
    sent = await fake.send_interaction("say", {"text": text, **options}, user=ALICE)
    first = await fake.wait_for(
        lambda: [p for p in fake.voice.packets[before:] if not p.is_silence],
        timeout_s=60,
        what="the first RTP packet",
    )
    await fake.send_interaction("stop", {}, user=ALICE)
    await settle(fake, sent)
    return sent.time, first[0].time


async def settle(fake: FakeDiscord, sent: SentInteraction) -> None:
    """Wait for the reply that ends an item, and for the player to be idle."""
    await fake.wait_for(
        lambda: [f for f in fake.followups_to(sent) if "said" in (f.content or "").lower()],
        timeout_s=120,
        what="the reply",
    )
    await asyncio.sleep(0.3)


async def gaps(fake: FakeDiscord, seconds: float) -> list[float]:
    """Play the long text for ``seconds``: [longest pause between two RTP packets (s), silence
    frames sent in place of late audio]."""
    before = len(fake.voice.packets)
    sent = await fake.send_interaction("say", {"text": LONG_TEXT}, user=ALICE)
    await fake.wait_for(
        lambda: fake.voice.packets[before:], timeout_s=60, what="the first RTP packet"
    )
    await asyncio.sleep(seconds)
    heard = list(fake.voice.packets[before:])
    await fake.send_interaction("stop", {}, user=ALICE)
    await settle(fake, sent)
    pauses = [b.time - a.time for a, b in itertools.pairwise(heard)]
    return [max(pauses), float(sum(p.is_silence for p in heard))]


async def timed(pipeline: SpeechPipeline, text: str) -> float:
    """Seconds ``pipeline`` takes to speak ``text``, the request made inside the timing."""
    started = time.perf_counter()
    await pipeline.speak(SpeechRequest(text=text))
    return time.perf_counter() - started


def settings(tmp: str, name: str, **more: Any) -> config.Settings:
    return config.load(data_dir=Path(tmp) / name, max_text_length=5000, **more)


async def measure(runs: int, baseline_runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    texts = sentences(runs)
    with tempfile.TemporaryDirectory() as tmp:
        # 1. cache hits
        pipeline = SpeechPipeline(settings(tmp, "cached", cache={"enabled": True}))
        try:
            async with discord_bot(pipeline) as fake:
                await say(fake, "Warming up.")
                for text in texts:  # said once: now in the cache
                    await say(fake, text)
                results["cache hit"] = [b - a for a, b in [await say(fake, t) for t in texts]]
        finally:
            await pipeline.aclose()

        # 2. and 3. the local voice, the cache off
        pipeline = SpeechPipeline(settings(tmp, "local", cache={"enabled": False}))
        try:
            async with discord_bot(pipeline) as fake:
                await say(fake, "Warming up.")
                results["one sentence"] = [b - a for a, b in [await say(fake, t) for t in texts]]
                results["long text"] = [
                    b - a for a, b in [await say(fake, LONG_TEXT) for _ in range(runs)]
                ]
                results["gaps"] = await gaps(fake, LISTEN_S)
            results["one sentence, baseline"] = [await timed(pipeline, t) for t in texts]
            results["long text, baseline"] = [
                await timed(pipeline, LONG_TEXT) for _ in range(baseline_runs)
            ]
        finally:
            await pipeline.aclose()

        # 4. a streaming provider
        async with TimedTogether(chunk_seconds=CHUNK_S, chunk_delay=CHUNK_S) as api:
            together = {"base_url": api.base_url, "api_key": "test-together-key"}
            pipeline = SpeechPipeline(
                settings(tmp, "stream", cache={"enabled": False}, providers={"together": together})
            )
            try:
                async with discord_bot(pipeline) as fake:
                    await say(fake, "Warming up.", provider="together")
                    streamed, first_chunk = [], []
                    for text in sentences(runs, offset=runs):
                        before = len(api.sent)
                        sent, heard = await say(fake, text, provider="together")
                        streamed.append(heard - sent)
                        first_chunk.append(api.sent[before] - sent)
                results["streamed"] = streamed
                results["first chunk"] = first_chunk
                results["streamed - first chunk"] = [
                    a - b for a, b in zip(streamed, first_chunk, strict=True)
                ]
            finally:
                await pipeline.aclose()
    return results


def table(results: dict[str, list[float]], runs: int, baseline_runs: int) -> str:
    def p50(name: str) -> float:
        return statistics.median(results[name])

    words = len(LONG_TEXT.split())
    count = len(split_sentences(LONG_TEXT))
    one = p50("one sentence")
    rows = [
        ("cache hit: a sentence said before", "cache hit", "≤ 0.050"),
        ("local voice, one sentence", "one sentence", "≤ 0.500"),
        ("baseline: its synthesis + transcoding alone", "one sentence, baseline", ""),
        (
            f"local voice, {words}-word text ({count} sentences), sentence by sentence",
            "long text",
            f"≤ 1.5 × one sentence = {1.5 * one:.3f}",
        ),
        (
            f"baseline: the whole text synthesized in one piece ({baseline_runs} runs)",
            "long text, baseline",
            "",
        ),
        (
            f"streaming provider (simulated Together, {CHUNK_S:g} s of audio per event)",
            "streamed",
            "",
        ),
        ("the simulated server's first event", "first chunk", ""),
        ("streaming provider − the server's first event", "streamed - first chunk", "≤ 0.030"),
    ]
    lines = [
        f"`/say` on the simulated Discord, {runs} runs per scenario, 2-core machine; time to "
        "first audio = INTERACTION_CREATE to the first RTP packet (baselines: the same "
        "synthesis without Discord):",
        "",
        "| scenario | p50 (s) | p95 (s) | goal (p50, s) | met |",
        "|---|---:|---:|---|:-:|",
    ]
    limits = {
        "cache hit": 0.050,
        "one sentence": 0.500,
        "long text": 1.5 * one,
        "streamed - first chunk": 0.030,
    }
    for label, name, goal in rows:
        values = results[name]
        met = "" if name not in limits else ("yes" if p50(name) <= limits[name] else "no")
        lines.append(
            f"| {label} | {p50(name):.3f} | {percentile(values, 0.95):.3f} | {goal} | {met} |"
        )
    longest, silences = results["gaps"]
    lines += [
        "",
        f"The {words}-word text played for {LISTEN_S:g} s: the longest pause between two RTP "
        f"packets was {longest * 1000:.0f} ms (goal ≤ 60 ms between sentences), and "
        f"{silences:.0f} silence frames stood in for late audio.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline-runs", type=int, default=5, help="whole 500-word texts")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(measure(args.runs, args.baseline_runs))
    result = table(results, args.runs, args.baseline_runs)
    print(result)
    if args.write_readme:
        write_readme("ttfa", result)


if __name__ == "__main__":
    main()
