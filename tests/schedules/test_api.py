"""``/api/v1/schedules`` on the running service (127.0.0.1), behind the API token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.ops import config, store
from bot.ops.store import state_path
from bot.schedules.scheduler import Scheduler
from bot.schedules.store import ScheduleBook
from bot.service import Service
from tests.support.sqlite import ticks_during, write_locked

TOKEN = "s3cret-token"
BINS = {
    "name": "bins",
    "cron": "0 19 * * 2",
    "time_zone": "Europe/London",
    "message": "Bins out, it is {weekday}.",
    "discord": [{"guild_id": 1, "channel_id": 2}],
}


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[str, Service]]:
    """The service on a free port, and its schedules URL."""
    settings = config.load(
        data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN}
    )
    service = Service(settings)
    await service.build()
    serving = asyncio.create_task(service.serve())
    try:
        for _ in range(1000):  # until the server listens
            if service.server.port:
                break
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{service.server.port}/api/v1/schedules", service
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[str, Service]]:
    async with running(tmp_path) as started:
        yield started


async def scheduler_readiness(http: aiohttp.ClientSession, service: Service) -> str:
    """What ``/readyz`` says of the running scheduler: its next fire time."""
    async with http.get(f"http://127.0.0.1:{service.server.port}/readyz") as response:
        return str((await response.json())["checks"]["scheduler"]["detail"])


async def test_without_the_token_every_route_is_401(api: tuple[str, Service]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http:
        for method, target in (
            ("GET", url),
            ("POST", url),
            ("GET", f"{url}/bins"),
            ("PATCH", f"{url}/bins"),
            ("DELETE", f"{url}/bins"),
        ):
            async with http.request(method, target, json=BINS) as response:
                assert response.status == 401, (method, target)
        wrong = {"Authorization": "Bearer nope"}
        async with http.post(url, json=BINS, headers=wrong) as response:
            assert response.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert (await response.json()) == {"schedules": []}  # nothing was created


async def test_create_list_pause_delete(api: tuple[str, Service]) -> None:
    url, service = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(url, json=BINS) as response:
            assert response.status == 201
            assert response.headers["Location"] == "/api/v1/schedules/bins"
            created = await response.json()
        upcoming = datetime.fromisoformat(created["next_fire"])
        assert (upcoming.weekday(), upcoming.hour, created["state"]) == (1, 19, "active")
        assert created["origin"] == "http"
        # the running scheduler has it at once (the API wakes it)
        await asyncio.sleep(0.1)
        detail = await scheduler_readiness(http, service)
        assert detail.startswith("1 schedule(s); next: bins at "), detail
        assert datetime.fromisoformat(detail.rsplit(" at ", 1)[1]) == upcoming
        async with http.post(url, json=BINS) as response:
            assert response.status == 409
            assert "exists" in (await response.json())["error"]
        async with http.get(url) as response:
            (listed,) = (await response.json())["schedules"]
            assert listed["name"] == "bins"
            assert listed["next_fire"] == created["next_fire"]
        async with http.patch(f"{url}/bins", json={"enabled": False}) as response:
            assert response.status == 200
            assert (await response.json())["state"] == "paused"
        await asyncio.sleep(0.1)
        assert await scheduler_readiness(http, service) == "1 schedule(s), none to fire"
        async with http.patch(f"{url}/bins", json={"message": "x"}) as response:
            assert response.status == 422
        async with http.get(f"{url}/bins") as response:
            assert (await response.json())["enabled"] is False
        async with http.delete(f"{url}/bins") as response:
            assert response.status == 204
        for method in ("GET", "DELETE", "PATCH"):
            async with http.request(method, f"{url}/bins", json={"enabled": True}) as response:
                assert response.status == 404
        async with http.get(url) as response:
            assert (await response.json()) == {"schedules": []}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"cron": "0 25 * * *"}, "cron: '0 25 * * *' is not a valid cron expression"),
        ({"time_zone": "Moon/Tranquility"}, "unknown time zone 'Moon/Tranquility'"),
        ({"cron": None, "at": "2020-01-01T00:00:00+00:00"}, "is in the past"),
        ({"message": "{time.year}"}, "attribute access or indexing"),
        ({"discord": [{"guild_id": "x", "channel_id": 2}]}, "discord"),
        ({"voice": "nobody"}, "unknown voice 'nobody'"),
        ({"repeat": 3}, "repeat: unknown field"),
        # no file name is that long: ZoneInfo raises OSError, which once answered 500
        ({"time_zone": "Europe/" + "x" * 300}, "unknown time zone"),
        # not a list of targets: once a TypeError (500)
        ({"discord": False}, "discord"),
        ({"discord": 7}, "discord"),
    ],
)
async def test_invalid_schedules_are_422_naming_the_problem(
    api: tuple[str, Service], change: dict[str, object], problem: str
) -> None:
    url, _ = api
    body = {k: v for k, v in {**BINS, **change}.items() if v is not None}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(url, json=body) as response:
            assert response.status == 422
            assert problem in (await response.json())["error"]
        async with http.post(url, data=b"{not json") as response:
            assert response.status == 400


async def test_one_shot_in_a_minute_is_accepted(api: tuple[str, Service]) -> None:
    url, _ = api
    at = (datetime.now(UTC) + timedelta(minutes=1)).replace(microsecond=0)
    body = {**BINS, "cron": None, "at": at.isoformat(), "name": "oven"}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    clean = {k: v for k, v in body.items() if v is not None}
    async with aiohttp.ClientSession(headers=auth) as http, http.post(url, json=clean) as r:
        assert r.status == 201
        assert datetime.fromisoformat((await r.json())["next_fire"]) == at


async def slowest_health_check(base: str, until: asyncio.Future[Any]) -> float:
    """The longest ``/healthz`` answer (s) while ``until`` is not done."""
    slowest = 0.0
    async with aiohttp.ClientSession() as http:
        while not until.done():
            started = time.monotonic()
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.02)
    return slowest


async def test_a_locked_state_file_leaves_the_server_answering(api: tuple[str, Service]) -> None:
    url, service = api
    base = f"http://127.0.0.1:{service.server.port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        with write_locked(state_path(service.settings.data_dir), seconds=1.0):
            posting = asyncio.ensure_future(http.post(url, json=BINS))
            slowest = await slowest_health_check(base, posting)
            response = await posting
        assert response.status == 201
        response.release()
    assert slowest < 0.5  # the event loop went on while the insert waited for the lock


async def test_a_lock_that_outlasts_the_busy_timeout_is_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running(tmp_path) as (url, service), aiohttp.ClientSession(headers=auth) as http:
        with write_locked(state_path(service.settings.data_dir), seconds=1.5):
            async with http.post(url, json=BINS) as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) >= 1
                error = (await response.json())["error"]
        assert "locked" in error
        assert str(state_path(service.settings.data_dir)) not in error  # no paths to callers


async def test_start_up_on_a_locked_state_file_blocks_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    earlier = ScheduleBook(data)  # the state file of an earlier run
    await earlier.count()
    earlier.close()
    settings = config.load(
        data_dir=data, http={"host": "127.0.0.1", "port": 0}, schedules=[BINS | {"discord": "1/2"}]
    )
    service = Service(settings)
    with write_locked(state_path(data), seconds=1.0):  # `oyez schedule add` meanwhile
        locked = time.monotonic()
        _, _, ticks = await ticks_during(service.build())
        assert ticks >= 1 or time.monotonic() - locked < 0.05  # before: blocked for the second
        serving = asyncio.create_task(service.serve())
        for _ in range(100):  # until the server listens
            if service.server.port:
                break
            await asyncio.sleep(0.01)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{service.server.port}/healthz") as response,
        ):
            assert response.status == 200
        assert time.monotonic() - locked < 0.9  # answered while the sync waited for the lock
    (scheduler,) = service.front_ends
    assert isinstance(scheduler, Scheduler)
    for _ in range(300):  # synced once the lock was gone
        if await scheduler.book.count():
            break
        await asyncio.sleep(0.01)
    assert await scheduler.book.count() == 1
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving


async def test_a_lock_past_the_busy_timeout_at_start_up_delays_the_sync_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)
    data = tmp_path / "data"
    earlier = ScheduleBook(data)
    await earlier.count()
    earlier.close()
    settings = config.load(
        data_dir=data, http={"host": "127.0.0.1", "port": 0}, schedules=[BINS | {"discord": "1/2"}]
    )
    service = Service(settings)
    await service.build()
    with write_locked(state_path(data), seconds=1.5):
        serving = asyncio.create_task(service.serve())
        await asyncio.sleep(1.0)  # the sync gave up after 0.2 s: the service serves on
        assert not serving.done()
    (scheduler,) = service.front_ends
    assert isinstance(scheduler, Scheduler)
    for _ in range(300):  # synced at a later poll, once the lock was gone
        if await scheduler.book.count():
            break
        await asyncio.sleep(0.01)
    assert [s.name for s in await scheduler.book.all()] == ["bins"]
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
