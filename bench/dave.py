"""Benchmark: time to first audio of a ``/say`` that joins the voice channel, DAVE off and on.

Oyez's Discord bot runs with the real discord.py client against the simulated Discord on
127.0.0.1 (tests/fakes/discord). Each run starts with the bot out of voice (``/leave``), so
the ``/say`` joins: gateway op 4, the voice websocket, IP discovery, SESSION_DESCRIPTION and,
with DAVE on, the MLS handshake (ops 25–30 and the transition, 22–23: Oyez's voice client waits
for it before it sends audio). The sentence is in the audio cache, so synthesis costs nothing
and the join is what is measured: INTERACTION_CREATE → the first RTP packet. DAVE off (the
baseline) and on alternate run by run on the same bot, the voice server switching its offer.
The DAVE handshake is also timed on its own: the bot's key package (op 26) → its transition
ready (op 23), as the voice server receives them.

``--write-readme`` puts the table into README.md between the bench:dave markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bench.ttfa import discord_bot, percentile, say, settings  # noqa: E402
from bot.synthesis.pipeline import SpeechPipeline  # noqa: E402
from tests.fakes.discord import ALICE, BOT, FakeDiscord  # noqa: E402

TEXT = "The washing machine has finished."
KEY_PACKAGE, TRANSITION_READY = 26, 23


async def leave(fake: FakeDiscord) -> None:
    """``/leave``, until the voice server has seen the bot's voice websocket close."""
    await fake.send_interaction("leave", {}, user=ALICE)
    await fake.wait_for(lambda: fake.voice_states.get(BOT.id) is None, what="the bot left")
    await fake.wait_for(lambda: all(s.closed for s in fake.voice.sessions), what="voice closed")


def handshake_s(fake: FakeDiscord) -> float:
    """Seconds from the last session's key package (op 26) to its transition ready (op 23)."""
    ops = fake.voice.ops
    start = max(o.time for o in ops if o.op == KEY_PACKAGE)
    return min(o.time for o in ops if o.op == TRANSITION_READY and o.time >= start) - start


async def measure(runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"off": [], "on": [], "handshake": []}
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = SpeechPipeline(settings(tmp, "dave", cache={"enabled": True}))
        try:
            async with discord_bot(pipeline) as fake:
                for version in (0, 1):  # warm up both: the voice, the cache, davey
                    fake.voice.dave_protocol_version = version
                    await say(fake, TEXT)
                    await leave(fake)
                for _ in range(runs):
                    for name, version in (("off", 0), ("on", 1)):
                        fake.voice.dave_protocol_version = version
                        sent, heard = await say(fake, TEXT)
                        results[name].append(heard - sent)
                        if version:
                            results["handshake"].append(handshake_s(fake))
                        await leave(fake)
        finally:
            await pipeline.aclose()
    return results


def table(results: dict[str, list[float]], runs: int, load: Sequence[float]) -> str:
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    rows = [
        ("baseline: DAVE off (transport encryption only)", "off"),
        ("DAVE on: the MLS handshake before the first frame", "on"),
        ("of which the handshake (op 26 → op 23)", "handshake"),
    ]
    lines = [
        f"A `/say` that joins the voice channel, its sentence in the cache, on the simulated "
        f"Discord: {runs} runs each, DAVE off and on alternating, 2-core machine (load average "
        f"{load[0]:.2f} at the start); time to first audio = INTERACTION_CREATE to the first "
        "RTP packet:",
        "",
        "| scenario | p50 (s) | p95 (s) | p50 ÷ baseline |",
        "|---|---:|---:|---:|",
    ]
    for label, name in rows:
        values = results[name]
        p50 = statistics.median(values)
        ratio = f"{on / off:.2f}×" if name == "on" else ("1.00×" if name == "off" else "")
        lines.append(f"| {label} | {p50:.3f} | {percentile(values, 0.95):.3f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    results = asyncio.run(measure(args.runs))
    result = table(results, args.runs, load)
    print(result)
    if args.write_readme:
        write_readme("dave", result)


if __name__ == "__main__":
    main()
