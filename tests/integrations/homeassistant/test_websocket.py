"""The websocket client's failure paths, against a small scripted Home Assistant on 127.0.0.1:
silent pongs, dropped connections, a server that is gone for a while, handlers that raise.
(The happy paths run against the real Home Assistant in test_homeassistant.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.providers.ratelimit import jittered_backoff_s
from integrations.homeassistant.websocket import ConnectionLost, HomeAssistantEvent
from tests.support.scripted_homeassistant import TOKEN, ScriptedHomeAssistant, client_for


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedHomeAssistant]:
    async with ScriptedHomeAssistant() as server:
        yield server


async def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (plain attributes)
            await asyncio.sleep(0.02)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    for attempt, step in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 30.0), (50, 30.0)]:
        delays = [jittered_backoff_s(attempt, 1.0, 30.0, jitter=0.5) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 100  # jittered, not one fixed value


async def test_silent_pongs_reconnect_and_resubscribe(
    scripted: ScriptedHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    received: list[HomeAssistantEvent] = []

    async def handler(event: HomeAssistantEvent) -> None:
        received.append(event)

    async with client_for(scripted, ping_interval_s=0.2, request_timeout_s=1) as client:
        await client.subscribe_events("oyez_announce", handler)
        await asyncio.sleep(0.7)  # a few pings answered: still the one connection
        assert len(scripted.connections) == 1
        scripted.answer_pings = False
        await wait_until(lambda: len(scripted.connections) == 2)
        scripted.answer_pings = True
        await client.wait_connected(5)
        assert "no pong within 0.2 s" in caplog.text
        assert "reconnected after" in caplog.text
        assert await scripted.push("oyez_announce", {"message": "hi"}) == 1
        await wait_until(lambda: received)
        assert received[0].data == {"message": "hi"}
        assert received[0].user_id == "u1"
        assert received[0].time_fired is not None
        assert received[0].time_fired.tzinfo is not None
    assert scripted.id_errors == 0
    assert TOKEN not in caplog.text


async def test_a_drop_fails_commands_in_flight_and_commands_wait_for_the_reconnection(
    scripted: ScriptedHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with client_for(scripted) as client:
        hanging = asyncio.create_task(client.command({"type": "hang"}))
        await asyncio.sleep(0.1)
        port = scripted.port
        await scripted.stop()  # the server goes away for a while
        with pytest.raises(ConnectionLost):
            await hanging
        assert not client.connected
        later = asyncio.create_task(client.get_states())  # waits for the connection
        await asyncio.sleep(0.8)
        assert not later.done()
        assert "reconnection 1 failed: cannot connect" in caplog.text
        await scripted.start(port)
        assert await asyncio.wait_for(later, 10) == []
        assert client.reconnects == 1
        assert await asyncio.gather(*(client.get_states() for _ in range(20))) == [[]] * 20
    assert scripted.id_errors == 0


async def test_a_handler_that_raises_does_not_stop_the_next_events(
    scripted: ScriptedHomeAssistant,
) -> None:
    seen: list[str] = []

    async def handler(event: HomeAssistantEvent) -> None:
        seen.append(event.data["n"])
        if event.data["n"] == "1":
            raise RuntimeError("boom")

    async with client_for(scripted) as client:
        await client.subscribe_events("oyez_announce", handler)
        for n in ("1", "2", "3"):
            await scripted.push("oyez_announce", {"n": n})
        await wait_until(lambda: len(seen) == 3)
    assert seen == ["1", "2", "3"]


async def test_an_unsubscribed_handler_hears_no_more_also_after_a_reconnection(
    scripted: ScriptedHomeAssistant,
) -> None:
    seen: list[str] = []

    async def handler(event: HomeAssistantEvent) -> None:
        seen.append(event.data["n"])

    async with client_for(scripted) as client:
        await client.subscribe_events("oyez_announce", handler)
        await scripted.push("oyez_announce", {"n": "1"})
        await wait_until(lambda: seen == ["1"])
        await client.unsubscribe_events("oyez_announce", handler)
        assert await scripted.push("oyez_announce", {"n": "2"}) == 0
        await client.unsubscribe_events("oyez_announce", handler)  # twice: no error
        await scripted.drop()
        await wait_until(lambda: client.reconnects == 1 and client.connected)
        assert await scripted.push("oyez_announce", {"n": "3"}) == 0
        await client.subscribe_events("oyez_announce", handler)  # and back
        await scripted.push("oyez_announce", {"n": "4"})
        await wait_until(lambda: seen == ["1", "4"])


async def test_commands_time_out_while_disconnected(scripted: ScriptedHomeAssistant) -> None:
    async with client_for(
        scripted, request_timeout_s=0.3, reconnect_min_s=5, reconnect_max_s=5
    ) as client:
        await scripted.stop()
        await wait_until(lambda: not client.connected)
        with pytest.raises(ConnectionLost, match="not connected to Home Assistant"):
            await client.ping()
