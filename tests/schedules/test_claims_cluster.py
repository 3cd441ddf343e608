"""Three processes run the same schedules through one engine: each firing is spoken once, also
when the process speaking them is killed (SIGKILL) between two firings; a firing whose claimer
died before delivering it is taken over within its grace."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.announce.announcer import Announcer
from bot.ops import config
from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.schedules.claims import Claim, firing_id
from bot.schedules.model import Schedule
from bot.schedules.scheduler import Scheduler
from bot.schedules.store import ScheduleBook
from tests.support.paths import ROOT
from tests.support.redis_server import redis_server, redis_url  # noqa: F401
from tests.support.sinks import RecordingSink

PROCESSES, FIRINGS, SPACING_S, KILL_AT, GRACE_S, LEASE_S = 3, 100, 0.25, 50, 5.0, 1.0
#: The lease of the claimer that dies in the takeover test: it outlasts the fire time.
DEAD_LEASE_S = 2.5


async def add_one_shots(data_dir: Path, first: datetime, count: int) -> list[str]:
    """``count`` one-shot schedules ``SPACING_S`` apart from ``first``; their firings' ids."""
    book = ScheduleBook(data_dir)
    firings = []
    try:
        for n in range(count):
            at = first + timedelta(seconds=n * SPACING_S)
            schedule = Schedule.parse(
                {
                    "name": f"alert-{n}",
                    "at": at.isoformat(),
                    "message": f"Alert {n}.",
                    "media_player": "media_player.kitchen",
                    "grace_s": GRACE_S,
                }
            )
            await book.add(schedule, "cli", datetime.now(UTC))
            firings.append(firing_id(schedule.name, at))
    finally:
        book.close()
    return firings


def heard(log: Path) -> list[tuple[str, float, int]]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    return [(i, float(t), int(p)) for i, t, p in (line.split() for line in lines)]


async def start_worker(data_dir: Path, url: str, log: Path) -> asyncio.subprocess.Process:
    job = {
        "data_dir": str(data_dir),
        "engine_url": url,
        "log": str(log),
        "lease_s": LEASE_S,
        "poll_s": 0.2,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.schedule_worker",
        json.dumps(job),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"ready"
    return process


async def test_three_processes_speak_each_firing_once_when_the_one_speaking_is_killed(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "heard.log"
    first = datetime.now(UTC) + timedelta(seconds=8)  # every process up by then
    firings = await add_one_shots(data_dir, first, FIRINGS)
    workers = list(
        await asyncio.gather(*(start_worker(data_dir, redis_url, log) for _ in range(PROCESSES)))
    )
    killed = None
    try:
        while len(heard(log)) < KILL_AT:  # noqa: ASYNC110 - other processes write the file
            await asyncio.sleep(0.01)
        killed = heard(log)[-1][2]  # the process that spoke the latest firing
        # between two firings: a process killed in the milliseconds between speaking a
        # firing and marking it done has it spoken again (at least once, never lost)
        await asyncio.sleep(SPACING_S / 2)
        next(w for w in workers if w.pid == killed).send_signal(signal.SIGKILL)
        last = first + timedelta(seconds=(FIRINGS - 1) * SPACING_S)
        deadline = time.time() + (last - datetime.now(UTC)).total_seconds() + 3 * LEASE_S + 5
        while len(heard(log)) < FIRINGS and time.time() < deadline:  # noqa: ASYNC110 - as above
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * LEASE_S)  # a second speaking of any firing would show by now
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()
    spoken = heard(log)
    counts = Counter(firing for firing, _, _ in spoken)
    assert [f for f in firings if counts[f] != 1] == []  # each exactly once
    assert len(spoken) == FIRINGS
    due = {f: first + timedelta(seconds=n * SPACING_S) for n, f in enumerate(firings)}
    late = [t - due[f].timestamp() for f, t, _ in spoken]
    assert max(late) <= GRACE_S
    after_kill = [pid for _, _, pid in spoken[KILL_AT:]]
    assert killed not in after_kill and len(set(after_kill)) >= 1


async def marked_done(engine: Engine, firing: str) -> None:
    """Returns once ``firing`` is marked done in the shared claims."""
    assert engine.client is not None
    key = f"{engine.settings.key_prefix}firing:{firing}"
    while await engine.client.get(key) != "done":  # noqa: ASYNC110 - state in the server
        await asyncio.sleep(0.02)


async def test_a_firing_whose_claimer_died_is_taken_over_within_its_grace(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    settings = config.load(data_dir=tmp_path / "data", announce={"duplicate_window_s": 0})
    at = datetime.now(UTC) + timedelta(seconds=1)
    (firing,) = await add_one_shots(settings.data_dir, at, 1)
    async with (
        await Engine.open(EngineSettings(url=redis_url)) as dead,
        await Engine.open(EngineSettings(url=redis_url)) as alive,
    ):
        # a process claimed the firing for its lease, then died without delivering it
        assert await dead.fire_claims().claim(firing, DEAD_LEASE_S) is Claim.WON
        lease_ends = time.time() + DEAD_LEASE_S
        announcer = Announcer(settings)
        sink = RecordingSink()
        announcer.add_sink(sink)
        scheduler = Scheduler(
            settings,
            announcer,
            ScheduleBook(settings.data_dir),
            claims=alive.fire_claims(),
            claim_lease_s=LEASE_S,
            poll_s=0.2,
        )
        await scheduler.start()
        serving = asyncio.create_task(scheduler.serve())
        try:
            await asyncio.wait_for(sink.arrived.wait(), timeout=lease_ends - time.time() + 5)
            await asyncio.wait_for(marked_done(alive, firing), timeout=5)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await scheduler.stop()
            await announcer.aclose()
        ((moment, text),) = sink.heard
        assert text == "Alert 0."
        assert moment.timestamp() >= lease_ends - 0.05  # not before the dead one's lease ran out
        assert (moment - at).total_seconds() <= GRACE_S  # and within the firing's grace


async def test_a_process_without_the_targets_sink_leaves_the_firing_to_one_with_it(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    settings = config.load(data_dir=tmp_path / "data", announce={"duplicate_window_s": 0})
    first = datetime.now(UTC) + timedelta(seconds=1)
    firings = await add_one_shots(settings.data_dir, first, 5)
    sink = RecordingSink()
    schedulers, announcers, tasks = [], [], []
    async with (
        await Engine.open(EngineSettings(url=redis_url)) as speaking,
        await Engine.open(EngineSettings(url=redis_url)) as deaf,
    ):
        for engine, sinks in ((deaf, []), (speaking, [sink])):  # the deaf one first, each time
            announcer = Announcer(settings)
            for each in sinks:
                announcer.add_sink(each)
            scheduler = Scheduler(
                settings,
                announcer,
                ScheduleBook(settings.data_dir),
                claims=engine.fire_claims(),
                claim_lease_s=LEASE_S,
                poll_s=0.2,
            )
            await scheduler.start()
            schedulers.append(scheduler)
            announcers.append(announcer)
            tasks.append(asyncio.create_task(scheduler.serve()))
        try:
            last = first + timedelta(seconds=4 * SPACING_S)
            await asyncio.sleep((last - datetime.now(UTC)).total_seconds() + 1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for scheduler, announcer in zip(schedulers, announcers, strict=True):
                await scheduler.stop()
                await announcer.aclose()
    # each one, by the process with the sink (had the deaf one claimed any, it would be lost)
    assert [text for _, text in sink.heard] == [f"Alert {n}." for n in range(len(firings))]
