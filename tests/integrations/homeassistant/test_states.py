"""The speakers' states kept warm (``subscribe_entities``), against a real Home Assistant
(2025.4.4, demo integration, on 127.0.0.1): they follow Home Assistant's state changes, are
received again after a reconnect (changes in the gap included), and an announcement, with its
snapshot, volume and resume, sends no state read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from integrations.homeassistant.service import HomeAssistantFrontEnd
from integrations.homeassistant.states import EntityStates
from integrations.homeassistant.websocket import HomeAssistantClient
from tests.integrations.homeassistant.test_service import front_end, is_oyez_media, running_oyez
from tests.integrations.homeassistant.test_speakers_ha import (
    BEDROOM,
    DONE,
    FAILED,
    SAX,
    answering,
    calls,
    prepare,
    settings,
)
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    homeassistant,  # noqa: F401
    observing,
)


@asynccontextmanager
async def warm_states(ha: HomeAssistant) -> AsyncIterator[tuple[HomeAssistantClient, EntityStates]]:
    """A client whose :class:`EntityStates` were subscribed before it connected, once warm."""
    assert ha.token is not None
    client = HomeAssistantClient(
        ha.websocket_url, SecretStr(ha.token), reconnect_min_s=0.2, reconnect_max_s=0.5
    )
    states = EntityStates(client)
    await states.start()
    async with client:
        await until(lambda: states.warm)
        yield client, states


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the condition is not an event
            await asyncio.sleep(0.01)


async def service(observer: Observer, name: str, data: dict[str, Any]) -> None:
    await observer.command(
        {
            "type": "call_service",
            "domain": "media_player",
            "service": name,
            "service_data": data,
            "target": {"entity_id": BEDROOM},
        }
    )


def attribute(states: EntityStates, name: str) -> Any:
    state = states.get(BEDROOM)
    assert state is not None
    return state["attributes"].get(name)


async def test_the_kept_states_follow_home_assistants_state_changes(
    homeassistant: HomeAssistant,  # noqa: F811
) -> None:
    async with warm_states(homeassistant) as (client, states), observing(homeassistant) as ha:
        everything = await ha.command({"type": "get_states"})
        players = {s["entity_id"]: s for s in everything if s["entity_id"].startswith("media_")}
        assert len(players) >= 5
        for entity_id, expected in players.items():
            kept = states.get(entity_id)
            assert kept is not None
            assert kept["state"] == expected["state"]
            assert dict(kept["attributes"]) == expected["attributes"]
        # only the domains Oyez plays on are kept; an unknown speaker is known to be missing
        assert not states.known(
            next(s["entity_id"] for s in everything if "light." in s["entity_id"])
        )
        assert states.get("media_player.nowhere") is None
        # changes made by someone else arrive as they happen
        await prepare(ha, BEDROOM, ("media_play", {}), ("volume_set", {"volume_level": 0.27}))
        await until(lambda: attribute(states, "volume_level") == 0.27)
        assert attribute(states, "media_content_id") == SAX["media_content_id"]
        await service(ha, "media_pause", {})
        await until(lambda: (states.get(BEDROOM) or {}).get("state") == "paused")
        # and what Oyez itself asks for is there once Home Assistant has answered
        await client.call_service(
            "media_player", "volume_set", {"volume_level": 0.61}, target={"entity_id": BEDROOM}
        )
        await until(lambda: attribute(states, "volume_level") == 0.61, timeout_s=1.0)
        assert (await ha.state(BEDROOM))["attributes"] == dict(states.get(BEDROOM)["attributes"])  # type: ignore[index]


async def test_the_kept_states_are_received_again_after_a_reconnect(
    homeassistant: HomeAssistant,  # noqa: F811
) -> None:
    async with warm_states(homeassistant) as (client, states), observing(homeassistant) as ha:
        await service(ha, "volume_set", {"volume_level": 0.2})
        await until(lambda: attribute(states, "volume_level") == 0.2)
        assert states.syncs == 1
        connection = client._connection
        assert connection is not None
        await connection.ws.close()  # the connection drops
        await until(lambda: not client.connected)
        assert not states.warm  # what it holds may be stale now: not answered from
        await service(ha, "volume_set", {"volume_level": 0.73})  # in the gap: no event for it
        await client.wait_connected(10)
        await until(lambda: states.warm)
        assert states.syncs == 2
        assert attribute(states, "volume_level") == 0.73
        await service(ha, "volume_set", {"volume_level": 0.4})  # and it follows again
        await until(lambda: attribute(states, "volume_level") == 0.4)


async def test_an_announcement_reads_no_state_from_home_assistant(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with observing(homeassistant, DONE, FAILED, "call_service") as ha:
        await prepare(ha, BEDROOM, ("media_play", {}), ("volume_set", {"volume_level": 0.45}))
        speakers = {BEDROOM: {"mode": "auto", "restore_delay_s": 0.2}}
        async with running_oyez(settings(homeassistant, tmp_path, **speakers)) as oyez:
            front: HomeAssistantFrontEnd = front_end(oyez)
            assert front.sink is not None
            reader = front.sink.states
            assert reader.warm is not None
            await until(lambda: reader.warm is not None and reader.warm.warm)
            sent: list[str] = []
            command = front.client.command

            async def recorded(message: dict[str, Any], **kwargs: Any) -> Any:
                sent.append(str(message.get("type")))
                return await command(message, **kwargs)

            front.client.command = recorded  # type: ignore[method-assign]
            await ha.fire(
                "oyez_announce",
                {"message": "Tea is ready.", "media_player": BEDROOM, "volume": 0.8, "id": "w1"},
            )
            assert (await ha.wait_event(answering("w1")))["event_type"] == DONE
            # the snapshot was taken from the kept states: put back at its volume, on its media
            after = await ha.wait_state(
                BEDROOM,
                lambda s: (
                    s["attributes"]["media_content_id"] == SAX["media_content_id"]
                    and s["attributes"]["volume_level"] == 0.45
                ),
            )
            assert after["state"] == "playing"
        assert "get_states" not in sent, sent
        assert reader.reads == 0
        asked = [e["data"]["service"] for e in calls(ha, BEDROOM)][3:]
        assert asked[:4] == ["volume_set", "play_media", "volume_set", "play_media"]
        played = calls(ha, BEDROOM, "play_media")[-2]["data"]["service_data"]
        assert is_oyez_media(oyez, played["media_content_id"])
        assert played["extra"]["volume"] == 80
