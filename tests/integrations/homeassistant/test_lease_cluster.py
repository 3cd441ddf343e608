"""Two real Oyez processes on one real Home Assistant and one engine: one holds the event
subscription under a lease; killed (SIGKILL) while events keep coming, the other takes it over
within seconds, and every event fired after the takeover is spoken, none twice."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integrations.homeassistant.service import DONE_EVENT, EVENT_LEASE_S, FAILED_EVENT
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    homeassistant,  # noqa: F401
    observing,
)
from tests.support.paths import ROOT
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

LIVING_ROOM = "media_player.living_room"
#: Seconds between two events, and how many come before and after the kill.
SPACING_S, BEFORE, AFTER = 0.4, 6, 12
#: The takeover comes within a lease and a renewal period; this much more on a loaded machine.
SLACK_S = 4.0


async def start_worker(
    ha: HomeAssistant, data_dir: Path, url: str
) -> tuple[asyncio.subprocess.Process, str]:
    """A worker connected to Home Assistant, and its media URLs' prefix."""
    job = {"data_dir": str(data_dir), "engine_url": url, "ha_url": ha.url, "token": ha.token}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.ha_worker",
        json.dumps(job),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode().split()
    assert line[0] == "ready", line
    return process, f"{line[1]}/media/"


async def holding(process: asyncio.subprocess.Process) -> asyncio.subprocess.Process:
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"holding"
    return process


def reporting(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["data"].get("request_id") == request_id)


def reports(ha: Observer) -> Counter[str]:
    """How many times each request was reported done or failed."""
    ended = (e for e in ha.events if e["event_type"] in (DONE_EVENT, FAILED_EVENT))
    return Counter(e["data"]["request_id"] for e in ended)


def played_by(ha: Observer, prefix: str) -> set[str]:
    """The living room speaker's media URLs that start with ``prefix`` (one process's)."""
    urls = set()
    for event in ha.events:
        if event["event_type"] != "state_changed" or event["data"]["entity_id"] != LIVING_ROOM:
            continue
        attributes = (event["data"].get("new_state") or {}).get("attributes") or {}
        url = attributes.get("media_content_id")
        if isinstance(url, str) and url.startswith(prefix):
            urls.add(url)
    return urls


async def fire(ha: Observer, n: int) -> str:
    request_id = f"e{n}"
    message = {"id": request_id, "message": f"Event number {n}.", "media_player": LIVING_ROOM}
    await ha.fire("oyez_announce", message)
    return request_id


async def test_the_subscribing_process_killed_mid_run_the_other_takes_over(
    homeassistant: HomeAssistant,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    data_dir = tmp_path / "data"
    started = await asyncio.gather(
        *(start_worker(homeassistant, data_dir, redis_url) for _ in "ab")
    )
    prefixes = {process.pid: prefix for process, prefix in started}
    workers = [process for process, _ in started]
    try:
        async with observing(homeassistant, DONE_EVENT, FAILED_EVENT, "state_changed") as ha:
            waits = {asyncio.create_task(holding(w)): w for w in workers}
            done, pending = await asyncio.wait(waits, timeout=30, return_when="FIRST_COMPLETED")
            holder = done.pop().result()
            (survivor,) = (w for w in workers if w is not holder)
            (survivor_holds,) = pending
            for n in range(BEFORE):  # events in flight when the holder dies
                await fire(ha, n)
                await asyncio.sleep(SPACING_S)
            holder.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            n, after = BEFORE, []
            while not survivor_holds.done():  # events keep coming; heard by no one for now
                await fire(ha, n)
                n += 1
                await asyncio.wait({survivor_holds}, timeout=SPACING_S)
            took_over_s = time.monotonic() - killed_at
            for _ in range(AFTER):
                after.append(await fire(ha, n))
                n += 1
                await asyncio.sleep(SPACING_S)
            for request_id in after:
                event = await ha.wait_event(reporting(request_id))
                assert event["event_type"] == DONE_EVENT, event
            await asyncio.sleep(2.0)  # a second speaking would be reported by now
            counts = reports(ha)
            survivor_played = played_by(ha, prefixes[survivor.pid])
            holder_played = played_by(ha, prefixes[holder.pid])
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()
    assert took_over_s <= EVENT_LEASE_S + EVENT_LEASE_S / 3 + SLACK_S, took_over_s
    assert [r for r in after if counts[r] != 1] == []  # every one after the takeover, once
    assert max(counts.values()) == 1  # and none of the earlier ones twice either
    assert len(survivor_played) == AFTER + sum(counts[f"e{k}"] for k in range(BEFORE, n - AFTER))
    assert counts["e0"] == 1 and len(holder_played) >= 1  # the killed one spoke the first
