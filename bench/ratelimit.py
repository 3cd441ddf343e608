"""Benchmark: client-side rate limiting against a provider that enforces its limit strictly.

A simulated provider runs on 127.0.0.1 (an aiohttp server on its own thread and event loop):
it accepts ``N`` calls per *fixed* window of ``W`` seconds, the first window starting at the
first call it sees, answers each accepted call with a few bytes of PCM after a short service
time, and refuses every call beyond the limit at once with HTTP 429 and
``x-ratelimit-reset: <seconds until its window resets>`` (Together / OpenAI style). It counts
accepted and refused calls per window.

200 requests are started together (``asyncio.gather``) through ``Dispatcher.synthesize``, the code
under test, with a minimal provider (kind ``bench``) that maps a 429 to
``RateLimited(retry_after_s=retry_after_s(headers))``. Time is scaled: the provider's minute is
``W`` = 0.5 s, so the configured ``window_s`` is ``W`` too. Three scenarios, each on a fresh
server and a fresh dispatcher:

- ``matched``: ``requests_per_minute`` = N, as the provider enforces it;
- ``too high``: ``requests_per_minute`` = 5 N (a paid plan configured on a free account): the
  bucket must learn the real limit from the 429s' reset hints;
- ``none``: only ``max_concurrent``; the limit is learned from the 429s alone.

Each scenario has ``max_concurrent`` = 4. Measured:

- *makespan*: first call sent → last response received (client side);
- *ideal*: (ceil(200 / N) − 1) × W + the median service time of one accepted call (as measured
  in the same run): the provider's windows fully used, no time lost to the limit;
- *429s*: calls the provider refused, in total and in its worst window;
- *lost*: requests that did not end with audio.

Goals (the issue): makespan / ideal ≤ 1.05, at most one 429 per window, none lost.
``--verbose`` prints each scenario's per-window timeline and every pause of the bucket.

Run ``make bench``; ``--write-readme`` puts the table into README.md between the
bench:ratelimit markers.

Over 450 lines: the simulated provider, three scenarios and their report live together so
the benchmark runs as one file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.readme import write_readme  # noqa: E402
from bot.errors import ProviderError, RateLimited  # noqa: E402
from bot.ops import config  # noqa: E402
from bot.providers.base import Provider, SynthesisJob, Synthesized, Usage  # noqa: E402
from bot.providers.dispatch import Dispatcher  # noqa: E402
from bot.providers.ratelimit import RateLimiter, remaining_calls, retry_after_s  # noqa: E402
from bot.speech import AudioChunk, AudioEncoding, SpeechRequest, Voice  # noqa: E402

VOICE = Voice("bench", "sim", "bench", "Bench")
PCM = bytes(320)  # 10 ms of 16 kHz mono silence


def clock() -> float:
    """The clock both sides use (the event loop's clock is ``time.monotonic`` too)."""
    return time.monotonic()


# -- the simulated provider ------------------------------------------------------------------


@dataclass
class Window:
    accepted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)


class StrictProvider:
    """An HTTP server allowing ``limit`` calls per fixed window of ``window_s`` seconds."""

    def __init__(
        self, limit: int, window_s: float, service_s: float, report_headroom: bool = False
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.service_s = service_s
        #: Also send x-ratelimit-remaining / -reset on accepted calls (Together does).
        self.report_headroom = report_headroom
        self.first: float | None = None
        self.windows: dict[int, Window] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = clock()
        with self._lock:
            if self.first is None:
                self.first = now
            index = int((now - self.first) // self.window_s)
            window = self.windows.setdefault(index, Window())
            if len(window.accepted) >= self.limit:
                window.refused.append(now)
                reset = self.first + (index + 1) * self.window_s - now
                return web.json_response(
                    {"error": "rate limit exceeded"},
                    status=429,
                    headers={"x-ratelimit-reset": f"{reset:.3f}", "x-received-at": repr(now)},
                )
            window.accepted.append(now)
            headroom = {
                # what the provider reports on every answer, as Together does
                "x-ratelimit-remaining": str(self.limit - len(window.accepted)),
                "x-ratelimit-reset": f"{self.first + (index + 1) * self.window_s - now:.3f}",
            }
        await asyncio.sleep(self.service_s)
        headers = {"x-received-at": repr(now)}
        if self.report_headroom:
            headers.update(headroom)
        return web.Response(body=PCM, content_type="application/octet-stream", headers=headers)

    async def health(self, request: web.Request) -> web.Response:  # noqa: ARG002 - an aiohttp handler
        return web.Response(text="ok")

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/audio/speech", self.handle)
        app.router.add_get("/health", self.health)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    @contextmanager
    def running(self) -> Iterator[str]:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# -- the provider Oyez calls -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    sent: float
    received: float  # by the simulated provider (the same clock)
    done: float
    status: int


class BenchProvider(Provider):
    """POSTs the text to the simulated provider; a 429 becomes :class:`RateLimited`."""

    kind: ClassVar[str] = "bench"

    def __init__(self, app_settings: config.Settings, base_url: str) -> None:
        super().__init__(None, app_settings)
        self.base_url = base_url
        self.calls: list[Call] = []
        self._session: aiohttp.ClientSession | None = None

    async def list_voices(self) -> list[Voice]:
        return [VOICE]

    def default_voice_id(self) -> str:
        return VOICE.id

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def open_connections(self, count: int) -> None:
        """Open ``count`` keep-alive connections (with calls the provider does not count)."""

        async def health() -> None:
            async with self.session.get(f"{self.base_url}/health") as response:
                await response.read()

        await asyncio.gather(*(health() for _ in range(count)))

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        sent = clock()
        async with self.session.post(
            f"{self.base_url}/v1/audio/speech", json={"input": job.text}
        ) as response:
            body = await response.read()
            received = float(response.headers["x-received-at"])
            self.calls.append(Call(sent, received, clock(), response.status))
            if response.status == 429:
                raise RateLimited(
                    self.name,
                    "too many requests",
                    retry_after_s=retry_after_s(response.headers),
                )
            if response.status != 200:
                raise ProviderError(self.name, "unexpected answer", status=response.status)
            remaining, reset = remaining_calls(response.headers)
        usage = Usage(rate_limit_remaining=remaining, rate_limit_reset_s=reset)
        return Synthesized(AudioChunk(body, AudioEncoding.PCM_S16LE, 16000, 1), usage)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# -- one scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """One :meth:`RateLimiter.pause`: when, the hint, and what the bucket counted to learn."""

    at: float
    hint_s: float | None
    paused_s: float
    learned_limit: int | None
    #: starts the bucket saw since the window start it inferred (now + hint - window_s)
    counted_starts: int | None

    def inferred_start(self, window_s: float) -> float | None:
        return None if self.hint_s is None else self.at + self.hint_s - window_s


@dataclass
class Result:
    scenario: str
    configured: str
    makespan_s: float
    ideal_s: float
    refused: int
    worst_window_refused: int
    lost: int
    windows: int
    learned_limit: int | None
    server: StrictProvider
    pauses: list[Pause]
    calls: list[Call]

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.ideal_s


def watch_pauses(limiter: RateLimiter, pauses: list[Pause]) -> None:
    """Record every pause of ``limiter`` (instrumentation only: the behaviour is unchanged)."""
    original = limiter.pause

    def pause(retry_after_s: float | None, refused: float | None = None) -> float:
        now = clock()
        paused = original(retry_after_s, refused)
        counted = limiter.learned_limit
        pauses.append(Pause(now, retry_after_s, paused, limiter.learned_limit, counted))
        return paused

    limiter.pause = pause  # type: ignore[method-assign]


async def run_scenario(  # noqa: PLR0913 - a scenario is these seven; its one caller is main()
    scenario: str,
    limits: dict[str, Any],
    requests: int,
    limit: int,
    window_s: float,
    warm: bool = False,
    headroom: bool = False,
) -> Result:
    server = StrictProvider(limit, window_s, service_s=0.02, report_headroom=headroom)
    with server.running() as base_url, tempfile.TemporaryDirectory() as tmp:
        settings = config.load(
            data_dir=Path(tmp) / "data", rate_limits={"providers": {"bench": limits}}
        )
        provider = BenchProvider(settings, base_url)
        if warm:
            await provider.open_connections(limits["max_concurrent"])
        dispatcher = Dispatcher(settings)
        pauses: list[Pause] = []
        limiter = dispatcher.limiter(provider, VOICE)
        watch_pauses(limiter, pauses)

        async def one(i: int) -> bool:
            text = f"Announcement number {i}."
            try:
                done = await dispatcher.synthesize(
                    provider,
                    SpeechRequest(text=text),
                    SynthesisJob(f"bench-{i}", text, VOICE),
                    wait_until=None,
                )
            except Exception as exc:  # a lost request; counted, and shown with --verbose
                logging.getLogger("bench").debug("request %d lost: %r", i, exc)
                return False
            return bool(done.chunks) and all(c.data for c in done.chunks)

        try:
            outcomes = await asyncio.gather(*(one(i) for i in range(requests)))
        finally:
            await provider.aclose()

    calls = provider.calls
    ok = [c for c in calls if c.status == 200]
    makespan = max(c.done for c in ok) - min(c.sent for c in calls)
    service = statistics.median(c.done - c.sent for c in ok)
    ideal = (math.ceil(requests / limit) - 1) * window_s + service
    windows = server.windows
    return Result(
        scenario=scenario,
        configured=describe(limits),
        makespan_s=makespan,
        ideal_s=ideal,
        refused=sum(len(w.refused) for w in windows.values()),
        worst_window_refused=max((len(w.refused) for w in windows.values()), default=0),
        lost=outcomes.count(False),
        windows=sum(1 for w in windows.values() if w.accepted),
        learned_limit=limiter.learned_limit,
        server=server,
        pauses=pauses,
        calls=calls,
    )


def describe(limits: dict[str, Any]) -> str:
    parts = []
    if limits.get("requests_per_minute") is not None:
        parts.append(f"{limits['requests_per_minute']:g} per window")
    else:
        parts.append("no limit")
    parts.append(f"{limits['max_concurrent']} at once")
    return ", ".join(parts)


def timeline(result: Result) -> str:
    """Per window of the simulated provider: its accepted and refused calls, and the bucket's
    pauses, with what the bucket counted to learn a limit and what the provider really saw."""
    server, calls = result.server, result.calls
    assert server.first is not None
    w, zero = server.window_s, server.first
    lag = [c.received - c.sent for c in calls]
    lines = [
        f"{result.scenario}: times are seconds since the provider received the first call; "
        f"its windows are [k*{w:g}, (k+1)*{w:g}). Sent → received: median "
        f"{statistics.median(lag) * 1000:.1f} ms, max {max(lag) * 1000:.1f} ms; the first call "
        f"was sent at {min(c.sent for c in calls) - zero:+.4f}."
    ]
    for index in sorted(server.windows):
        window = server.windows[index]
        start = zero + index * w
        if window.accepted:
            lines.append(
                f"  window {index:2d}: {len(window.accepted):3d} accepted "
                f"(received {window.accepted[0] - zero:.4f} … {window.accepted[-1] - zero:.4f})"
                f", {len(window.refused)} refused"
                + (
                    " (received " + ", ".join(f"{t - zero:.4f}" for t in window.refused) + ")"
                    if window.refused
                    else ""
                )
            )
        else:
            lines.append(f"  window {index:2d}: none accepted, {len(window.refused)} refused")
        for pause in result.pauses:
            if not start <= pause.at < start + w:
                continue
            inferred = pause.inferred_start(w)
            line = (
                f"    pause at {pause.at - zero:.4f} for {pause.paused_s:.3f} s "
                f"(hint {'none' if pause.hint_s is None else f'{pause.hint_s:.3f} s'}), "
                f"learned limit now {pause.learned_limit}"
            )
            if inferred is not None:
                accepted = [c for c in calls if c.status == 200 and start <= c.received < start + w]
                refused_in = [
                    c
                    for c in calls
                    if c.status == 429 and start <= c.received < start + w and c.sent >= inferred
                ]
                early = sum(1 for c in accepted if c.sent < inferred)
                line += (
                    f"\n      inferred window start {inferred - zero:+.4f}: the bucket counted "
                    f"{pause.counted_starts} starts since (minus 1 = "
                    f"{(pause.counted_starts or 0) - 1}), {len(refused_in)} of them calls "
                    "refused in this window; "
                    f"{early} of the {len(accepted)} calls the provider accepted in this window "
                    "were started before the inferred start"
                )
            lines.append(line)
    return "\n".join(lines)


def table(results: list[Result], requests: int, limit: int, window_s: float) -> str:
    lines = [
        f"{requests} requests at once through `Dispatcher.synthesize`; the simulated provider "
        f"accepts {limit} calls per fixed {window_s:g} s window (scaled time: {window_s:g} s "
        "stands for a minute) and answers 429 with `x-ratelimit-reset` beyond; goals: "
        "ratio ≤ 1.05, at most one 429 per window, none lost:",
        "",
        "| client limit | makespan (s) | ideal (s) | ratio | 429s | worst window's 429s | "
        "learned limit | windows used | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        learned = "-" if r.learned_limit is None else str(r.learned_limit)
        lines.append(
            f"| {r.scenario}: {r.configured} | {r.makespan_s:.3f} | {r.ideal_s:.3f} "
            f"| {r.ratio:.3f} | {r.refused} | {r.worst_window_refused} | {learned} "
            f"| {r.windows} | {r.lost} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20, help="calls per window (N)")
    parser.add_argument("--window", type=float, default=0.5, help="window in seconds (W)")
    parser.add_argument("--concurrent", type=int, default=4, help="max_concurrent")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="open the connections before the first counted call (no connection set-up lag)",
    )
    parser.add_argument("--verbose", action="store_true", help="print per-window timelines")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    # The dispatcher logs every 429 as a warning: the timeline (--verbose) says it better.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR)
    logging.getLogger("bot").setLevel(logging.ERROR)
    for noisy in ("asyncio", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    n, w, c = args.limit, args.window, args.concurrent
    matched = {"requests_per_minute": n, "window_s": w, "max_concurrent": c}
    too_high = {"requests_per_minute": 5 * n, "window_s": w, "max_concurrent": c}
    unknown = {"window_s": w, "max_concurrent": c}
    # (name, client limits, whether the provider reports its headroom on every answer)
    scenarios: list[tuple[str, dict[str, Any], bool]] = [
        ("matched", matched, False),
        ("too high", too_high, False),
        ("none", unknown, False),
        ("too high, headroom reported", too_high, True),
        ("none, headroom reported", unknown, True),
    ]
    results = []
    for name, limits, headroom in scenarios:
        result = asyncio.run(run_scenario(name, limits, args.requests, n, w, args.warm, headroom))
        results.append(result)
        if args.verbose:
            print(timeline(result), end="\n\n")
    text = table(results, args.requests, n, w)
    print(text)
    if args.write_readme:
        write_readme("ratelimit", text)


if __name__ == "__main__":
    main()
