"""Benchmark: how soon a finished Segmind v2 job's audio is in hand, Oyez against the SDK.

Both clients run against the simulated Segmind v2 API (tests/fakes/segmind.py) on 127.0.0.1,
20 jobs each, 4 at a time. The baseline is the official ``segmind`` SDK (``SegmindClient``
pointed at the same server: ``submit_async`` + ``job.wait()``, its defaults, then a download of
``output``), measured in the same run. Oyez is ``SegmindProvider.synthesize``.

*Lag* = audio in hand − the instant the server finished the job. *Status requests* are the
``GET /v2/requests/{id}/status`` calls each client made.

Two job-duration scenarios, each spread over 0.5–5 s:

- ``proportional``: run time grows with the text (as TTS inference does), ±10 % noise;
- ``random``: run time drawn at random, unrelated to the text (nothing to learn).

Run ``make bench``; ``--write-readme`` puts the table into README.md between the bench:poll
markers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import segmind

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.providers.base import SynthesisJob  # noqa: E402
from integrations.segmind import SegmindProvider  # noqa: E402
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind, Job  # noqa: E402

MODEL = "chatterbox-turbo-tts"
WORDS = (
    "the kitchen timer has finished and dinner is almost ready so please come downstairs "
    "and wash your hands before we sit down together at the table tonight"
).split()


class TimedSegmind(FakeSegmind):
    """The simulated API with a run time chosen per job (by its text)."""

    def __init__(self, durations: dict[str, float]) -> None:
        super().__init__(v2_queued_seconds=0.0, v2_processing_seconds=1.0, credits=1e6)
        self.durations = durations

    def _stage(self, job: Job) -> Literal["QUEUED", "PROCESSING", "DONE"]:
        if self.clock() - job.submitted_at >= self.durations[job.text]:
            return "DONE"
        return "PROCESSING"


@dataclass
class Outcome:
    lags: list[float]
    status_requests: int


def jobs(scenario: str, count: int, seed: int) -> dict[str, float]:
    """``count`` distinct texts and their run times (s), spread over 0.5-5 s."""
    rng = random.Random(seed)
    plan: dict[str, float] = {}
    while len(plan) < count:
        length = rng.randint(4, 40)
        text = " ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + "."
        if scenario == "proportional":
            seconds = (0.5 + 4.5 * (length - 4) / 36) * rng.uniform(0.9, 1.1)
        else:
            seconds = rng.uniform(0.5, 5.0)
        plan[text] = min(max(seconds, 0.5), 5.0)
    return plan


def finish_time(fake: TimedSegmind, text: str) -> float:
    job = next(j for j in fake.jobs.values() if j.text == text)
    return job.submitted_at + fake.durations[text]


async def run_oyez(fake: TimedSegmind, texts: list[str], parallel: int) -> Outcome:
    settings = config.load(
        providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}}
    )
    provider = SegmindProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, MODEL)
    lags: list[float] = []

    async def one(text: str) -> None:
        await provider.synthesize(SynthesisJob("bench", text, voice))
        lags.append(time.time() - finish_time(fake, text))

    try:
        for start in range(0, len(texts), parallel):
            await asyncio.gather(*(one(t) for t in texts[start : start + parallel]))
    finally:
        await provider.aclose()
    return Outcome(lags, len([r for r in fake.requests if r.path.endswith("/status")]))


def sdk_job(client: segmind.SegmindClient, fake: TimedSegmind, text: str) -> float:
    job = client.submit_async(MODEL, text=text, reference_audio="https://example.com/voice.mp3")
    result = job.wait()
    httpx.get(result["output"], timeout=60).raise_for_status()
    return time.time() - finish_time(fake, text)


async def run_sdk(fake: TimedSegmind, texts: list[str], parallel: int) -> Outcome:
    client = segmind.SegmindClient(api_key=DEFAULT_API_KEY, base_url=f"{fake.base_url}/v1")
    lags: list[float] = []
    for start in range(0, len(texts), parallel):
        batch = texts[start : start + parallel]
        lags += await asyncio.gather(*(asyncio.to_thread(sdk_job, client, fake, t) for t in batch))
    return Outcome(lags, len([r for r in fake.requests if r.path.endswith("/status")]))


async def measure(scenario: str, count: int, parallel: int) -> tuple[Outcome, Outcome]:
    plan = jobs(scenario, count, seed=7)
    texts = list(plan)
    async with TimedSegmind(plan) as fake:
        sdk = await run_sdk(fake, texts, parallel)
    async with TimedSegmind(plan) as fake:
        oyez = await run_oyez(fake, texts, parallel)
    return sdk, oyez


def table(results: dict[str, tuple[Outcome, Outcome]], count: int, parallel: int) -> str:
    lines = [
        f"{count} jobs per client and scenario, {parallel} at a time, run times 0.5-5 s; "
        "lag = audio in hand - job finished on the server:",
        "",
        "| scenario | client | median lag (s) | p95 lag (s) | status requests | lag ratio | "
        "requests ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario, (sdk, oyez) in results.items():
        sdk_median = statistics.median(sdk.lags)
        for name, outcome in (("`segmind` SDK 1.3 (baseline)", sdk), ("Oyez", oyez)):
            median = statistics.median(outcome.lags)
            p95 = statistics.quantiles(outcome.lags, n=20)[-1]
            lines.append(
                f"| {scenario} | {name} | {median:.3f} | {p95:.3f} | {outcome.status_requests} "
                f"| {median / sdk_median:.2f}× "
                f"| {outcome.status_requests / sdk.status_requests:.2f}× |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    results = {
        scenario: asyncio.run(measure(scenario, args.jobs, args.parallel))
        for scenario in ("proportional", "random")
    }
    result = table(results, args.jobs, args.parallel)
    print(result)
    if args.write_readme:
        write_readme("poll", result)


if __name__ == "__main__":
    main()
