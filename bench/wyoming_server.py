"""Benchmark: Oyez's Wyoming server against the ``wyoming-piper`` 2.4.2 server, client side.

Both servers on 127.0.0.1 with the same voice (``en_US-joe-medium``, the same files,
``--noise-scale 0 --noise-w-scale 0`` like Oyez's Piper here), asked by the ``wyoming``
package's own client (as Home Assistant asks), one connection per request, in rounds, each
round both servers once, the order reversed every other round (A B, B A…):

- **fresh sentence**: ``synthesize`` → ``audio-stop`` for a sentence no one has said before
  (the same sentence to both servers in a round);
- **3-sentence text**: ``synthesize`` → the first ``audio-chunk``, and → ``audio-stop``, for a
  fresh three-sentence text.

Ratios are medians against wyoming-piper's in the same run. ``--write-readme`` puts the table
into README.md between the bench:wyoming markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ha import (  # noqa: E402
    VOICE,
    fresh_sentences,
    long_announcement,
    oyez_wyoming,
    p90,
    wyoming_piper,
)
from bench.readme import write_readme  # noqa: E402
from tests.support.homeassistant import free_port  # noqa: E402


@dataclass
class Reply:
    """One request: seconds to ``audio-start``'s rate, the first chunk, ``audio-stop``."""

    rate: int
    first_s: float
    full_s: float


@dataclass
class Server:
    """One Wyoming server, the voice name it takes, and what it measured, by round kind."""

    name: str
    port: int
    voice: str
    replies: dict[str, list[Reply]] = field(default_factory=dict)


async def synthesize(port: int, voice: str, text: str) -> Reply:
    """``synthesize`` on a new connection, timed to the first chunk and to ``audio-stop``."""
    rate = 0
    first: float | None = None
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)).event())
        async with asyncio.timeout(60):
            while True:
                event = await client.read_event()
                if event is None:
                    raise RuntimeError(f"the server on port {port} closed the connection")
                if AudioStart.is_type(event.type):
                    rate = AudioStart.from_event(event).rate
                elif AudioChunk.is_type(event.type) and first is None:
                    first = time.perf_counter() - started
                elif event.type == "audio-stop":
                    break
                elif event.type == "error":
                    raise RuntimeError(f"the server on port {port} answered {event.data}")
    if first is None:
        raise RuntimeError(f"the server on port {port} sent no audio")
    return Reply(rate, first, time.perf_counter() - started)


async def rounds(servers: list[Server], kind: str, texts: list[str]) -> None:
    for i, text in enumerate(texts):
        order = servers if i % 2 == 0 else servers[::-1]
        line = []
        for server in order:
            reply = await synthesize(server.port, server.voice, text)
            server.replies.setdefault(kind, []).append(reply)
            line.append(f"{server.name} {reply.first_s * 1000:.0f}/{reply.full_s * 1000:.0f}")
            await asyncio.sleep(0.1)
        print(f"{kind} {i + 1}/{len(texts)}: {'; '.join(line)} ms", file=sys.stderr)


async def measure(tmp: Path, runs: int) -> list[Server]:
    oyez_port, piper_port = free_port(), free_port()
    with wyoming_piper(piper_port), oyez_wyoming(oyez_port, tmp / "oyez"):
        servers = [
            Server("wyoming-piper", piper_port, VOICE),
            Server("Oyez", oyez_port, f"piper/{VOICE}"),
        ]
        await rounds(servers, "warm-up", ["Warming up.", "Still warming up. Nearly there."])
        fresh = list(fresh_sentences(runs, 100))
        # sentences 800 + 3i on: 200 + 3i again, none of the fresh ones (a cached sentence
        # would be Oyez's first chunk)
        long = [long_announcement(100 + i) for i in range(runs)]
        if any(sentence in text for sentence in fresh for text in long):
            raise SystemExit(f"--runs {runs}: the long texts repeat a fresh sentence")
        await rounds(servers, "fresh", fresh)
        await rounds(servers, "long", long)
        return servers


Pick = Callable[[Reply], float]


def row(name: str, values: list[float], baseline: float, goal: str) -> str:
    median = statistics.median(values)
    return (
        f"| {name} | {median * 1000:.0f} | {p90(values) * 1000:.0f} | "
        f"{median / baseline:.2f}× | {goal} |"
    )


def table(servers: list[Server], runs: int, load: tuple[float, float]) -> str:
    piper, oyez = servers
    lines = [
        f"Both servers on 127.0.0.1, the `wyoming` client, one run, interleaved (A B, B A…), "
        f"{runs} rounds per kind, {os.cpu_count()}-core machine, load average {load[0]:.2f} "
        f"before and {load[1]:.2f} after; ms; ratio = median against wyoming-piper's in the "
        "same run. Rates sent: "
        f"wyoming-piper {piper.replies['fresh'][0].rate} Hz, Oyez {oyez.replies['fresh'][0].rate} "
        "Hz.",
        "",
        "| request → event | server | median (ms) | p90 (ms) | ratio | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    measures: list[tuple[str, str, Pick, str]] = [
        ("fresh sentence → `audio-stop`", "fresh", lambda r: r.full_s, "≤ 1.00×"),
        ("3 sentences → first `audio-chunk`", "long", lambda r: r.first_s, "≤ 0.60×"),
        ("3 sentences → `audio-stop`", "long", lambda r: r.full_s, ""),
    ]
    for what, kind, pick, goal in measures:
        baseline = statistics.median(pick(r) for r in piper.replies[kind])
        for server, server_goal in ((piper, ""), (oyez, goal)):
            values = [pick(r) for r in server.replies[kind]]
            lines.append(row(f"{what} | {server.name}", values, baseline, server_goal))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before = os.getloadavg()[0]
        servers = asyncio.run(measure(Path(folder), args.runs))
        after = os.getloadavg()[0]
    result = table(servers, args.runs, (before, after))
    print(result)
    if args.write_readme:
        write_readme("wyoming", result)


if __name__ == "__main__":
    main()
