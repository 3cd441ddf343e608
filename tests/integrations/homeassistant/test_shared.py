"""Two Oyez processes connected to one real Home Assistant through one engine: both hear every
``oyez_announce`` event, the first to claim its context id speaks it, once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.ops import config
from bot.ops.config import EngineSettings, Settings
from bot.ops.engine import Engine
from bot.service import Service
from integrations.homeassistant.service import DONE_EVENT, FAILED_EVENT, HomeAssistantFrontEnd
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    homeassistant,  # noqa: F401
    observing,
)
from tests.support.redis_server import redis_server, redis_url  # noqa: F401
from tests.support.serving import front_end_of, served

LIVING_ROOM = "media_player.living_room"
EVENTS = 5


def shared_settings(ha: HomeAssistant, tmp_path: Path, engine_url: str) -> Settings:
    """Both processes' settings: one data folder, one engine; no duplicate window, so only
    the events' context ids tell the two processes' copies apart."""
    return config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        homeassistant={"url": ha.url, "token": ha.token, "reconnect_min_s": 0.2},
        announce={"duplicate_window_s": 0},
        engine={"url": engine_url},
    )


def front_end(service: Service) -> HomeAssistantFrontEnd:
    return front_end_of(service, HomeAssistantFrontEnd)


def serving(service: Service) -> contextlib.AbstractAsyncContextManager[Service]:
    """``service`` served in a task, once connected to Home Assistant."""
    return served(service, HomeAssistantFrontEnd)


def plays(observer: Observer, service: Service) -> int:
    """How many of ``service``'s media URLs the living room speaker was given."""
    prefix = f"{service.server.media.base_url}/media/"
    urls = set()
    for event in observer.events:
        if event["event_type"] != "state_changed":
            continue
        if event["data"]["entity_id"] != LIVING_ROOM:
            continue
        attributes = (event["data"].get("new_state") or {}).get("attributes") or {}
        url = attributes.get("media_content_id")
        if isinstance(url, str) and url.startswith(prefix):
            urls.add(url)
    return len(urls)


def reporting(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["data"].get("request_id") == request_id)


async def test_two_processes_speak_each_event_once(
    homeassistant: HomeAssistant,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    engines = [await Engine.open(EngineSettings(url=redis_url)) for _ in range(2)]
    settings = shared_settings(homeassistant, tmp_path, redis_url)
    services = [Service(settings, engine=engine) for engine in engines]
    for service in services:
        await service.build()
        assert front_end(service).events is not None
    try:
        async with (
            serving(services[0]),
            serving(services[1]),
            observing(homeassistant, DONE_EVENT, FAILED_EVENT, "state_changed") as ha,
        ):
            for n in range(EVENTS):
                await ha.fire(
                    "oyez_announce",
                    {"id": f"e{n}", "message": f"Event number {n}.", "media_player": LIVING_ROOM},
                )
            for n in range(EVENTS):
                done = await ha.wait_event(reporting(f"e{n}"))
                assert done["event_type"] == DONE_EVENT, done
            await asyncio.sleep(1.5)  # a second speaking would be reported by now
            reports = [e for e in ha.events if e["event_type"] in (DONE_EVENT, FAILED_EVENT)]
            assert sorted(e["data"]["request_id"] for e in reports) == [
                f"e{n}" for n in range(EVENTS)
            ]
            assert sum(plays(ha, service) for service in services) == EVENTS
    finally:
        for engine in engines:
            await engine.aclose()


async def test_a_holder_that_stops_hands_the_events_over_at_once(
    homeassistant: HomeAssistant,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    engines = [await Engine.open(EngineSettings(url=redis_url)) for _ in range(2)]
    settings = shared_settings(homeassistant, tmp_path, redis_url)
    holder, standby = (Service(settings, engine=engine) for engine in engines)
    for service in (holder, standby):
        await service.build()
    loop = asyncio.get_running_loop()
    try:
        async with contextlib.AsyncExitStack() as first:
            await first.enter_async_context(serving(holder))
            assert front_end(holder).holds_events  # the first one up takes the lease
            async with serving(standby), observing(homeassistant, DONE_EVENT) as ha:
                assert not front_end(standby).holds_events  # one subscription for both
                assert (
                    "another process holds the event subscription"
                    in (front_end(standby).ready()[1])
                )
                await first.aclose()  # the holder stops (oyez run ends)
                stopped = loop.time()
                while not front_end(standby).holds_events:  # noqa: ASYNC110 - its lease task
                    await asyncio.sleep(0.02)
                # released on stop: taken at the next renewal (a third of the lease)
                assert loop.time() - stopped <= front_end(standby).lease_s / 3 + 1.0
                event = {"id": "after", "message": "Hello.", "media_player": LIVING_ROOM}
                await ha.fire("oyez_announce", event)
                assert (await ha.wait_event(reporting("after")))["event_type"] == DONE_EVENT
    finally:
        for engine in engines:
            await engine.aclose()
