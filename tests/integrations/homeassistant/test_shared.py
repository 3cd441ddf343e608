"""Two Oyez processes connected to one real Home Assistant through one engine: both hear every
``oyez_announce`` event, the first to claim its context id speaks it, once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.service import Service
from tests.integrations.homeassistant.test_service import (
    DONE,
    FAILED,
    LIVING_ROOM,
    front_end,
    oyez_plays,
    oyez_settings,
    running_oyez,
)
from tests.support.homeassistant import HomeAssistant, homeassistant, observing  # noqa: F401
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

EVENTS = 5


def reporting(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["data"].get("request_id") == request_id)


async def test_two_processes_speak_each_event_once(
    homeassistant: HomeAssistant,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    engines = [await Engine.open(EngineSettings(url=redis_url)) for _ in range(2)]
    # no duplicate window: only the events' context ids tell the two processes' copies apart
    settings = oyez_settings(homeassistant, tmp_path, duplicate_window_s=0)
    services = [Service(settings, engine=engine) for engine in engines]
    for service in services:
        await service.build()
        assert front_end(service).events is not None
    try:
        async with (
            running_oyez(settings, services[0]),
            running_oyez(settings, services[1]),
            observing(homeassistant, DONE, FAILED, "state_changed") as ha,
        ):
            for n in range(EVENTS):
                await ha.fire(
                    "oyez_announce",
                    {"id": f"e{n}", "message": f"Event number {n}.", "media_player": LIVING_ROOM},
                )
            for n in range(EVENTS):
                done = await ha.wait_event(reporting(f"e{n}"))
                assert done["event_type"] == DONE, done
            await asyncio.sleep(1.5)  # a second speaking would be reported by now
            reports = [e for e in ha.events if e["event_type"] in (DONE, FAILED)]
            assert sorted(e["data"]["request_id"] for e in reports) == [
                f"e{n}" for n in range(EVENTS)
            ]
            plays = sum(len(oyez_plays(ha, service, LIVING_ROOM)) for service in services)
            assert plays == EVENTS
    finally:
        for engine in engines:
            await engine.aclose()
