"""A Home Assistant that is still starting: its websocket answers early in its start-up
(``http`` is set up in bootstrap's stage 0), before its integrations have made their entities,
so after a restart Oyez is back before the speakers are. A target missing then (or
``unavailable``, as Home Assistant restores a registered entity's state until its integration
has set it up) is waited for until Home Assistant runs (or the announcement's ttl runs out),
not failed; one missing or unavailable in a running Home Assistant still fails at once.
Against the scripted websocket server (tests/support/scripted_homeassistant.py): the real one
cannot be held in its start-up on demand; test_service.py restarts the real one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.announce.model import Announcement
from bot.ops import config
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from bot.web.server import MediaStore
from integrations.homeassistant import websocket
from integrations.homeassistant.satellite import SatelliteSink
from integrations.homeassistant.settings import SpeakerMode, SpeakerSettings
from integrations.homeassistant.visit import Playback, SpeakerVisit, StateReader
from integrations.homeassistant.websocket import HomeAssistantClient
from tests.support.scripted_homeassistant import ScriptedHomeAssistant, client_for

KITCHEN = "media_player.kitchen"
SATELLITE = "assist_satellite.hall"


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedHomeAssistant]:
    async with ScriptedHomeAssistant() as server:
        yield server


@pytest.fixture
async def client(scripted: ScriptedHomeAssistant) -> AsyncIterator[HomeAssistantClient]:
    async with client_for(scripted) as connected:
        yield connected


def entity(entity_id: str, state: str = "idle", **attributes: Any) -> dict[str, Any]:
    return {"entity_id": entity_id, "state": state, "attributes": attributes}


def playback(ttl_s: float | None = None) -> Playback:
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s) if ttl_s is not None else None
    request = SpeechRequest(id="r1", text="Hello.", expires_at=expires)
    return Playback("http://oyez.lan/media/x.mp3", "Hello.", None, 1.5, request)


def played(scripted: ScriptedHomeAssistant, entity_id: str) -> list[str]:
    return [
        service for _, service, _, target in scripted.calls if target == {"entity_id": entity_id}
    ]


async def starts_after(scripted: ScriptedHomeAssistant, delay_s: float, *made: str) -> None:
    """After ``delay_s``: the entities ``made`` exist and Home Assistant runs (its
    integrations set up, then ``RUNNING`` and ``core_config_updated``, in that order)."""
    await asyncio.sleep(delay_s)
    scripted.states = [entity(e, supported_features=512 | 1048576) for e in made]
    await scripted.set_core_state("RUNNING")


async def test_a_running_home_assistant_is_not_waited_for(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient
) -> None:
    assert await client.core_state() == "RUNNING"
    assert await client.wait_started(10) is False
    assert scripted.config_reads == 2
    assert all(not s for s in scripted.subscriptions.values())  # nothing left subscribed


async def test_a_starting_home_assistant_is_waited_for_until_it_runs(
    scripted: ScriptedHomeAssistant,
    client: HomeAssistantClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket, "STARTED_POLL_S", 60.0)  # so only the event can end it
    scripted.core_state = "NOT_RUNNING"
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(client.wait_started(30))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await scripted.set_core_state("STARTING")  # still starting: goes on waiting
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = loop.time()
    await scripted.set_core_state("RUNNING")
    assert await asyncio.wait_for(waiting, 10) is True
    assert loop.time() - started < 5  # on the event, not the 60 s look
    assert all(not s for s in scripted.subscriptions.values())


async def test_a_missed_event_is_made_up_for_by_looking_again(
    scripted: ScriptedHomeAssistant,
    client: HomeAssistantClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket, "STARTED_POLL_S", 0.1)
    scripted.core_state = "STARTING"
    waiting = asyncio.create_task(client.wait_started(30))
    await asyncio.sleep(0.3)
    scripted.core_state = "RUNNING"  # no core_config_updated
    assert await asyncio.wait_for(waiting, 10) is True


async def test_waiting_for_a_start_that_does_not_end_gives_up_at_the_timeout(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient
) -> None:
    scripted.core_state = "NOT_RUNNING"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client.wait_started(0.5) is True
    assert 0.5 <= loop.time() - started < 3


@pytest.mark.parametrize("mode", [SpeakerMode.AUTO, SpeakerMode.ANNOUNCE])
async def test_a_speaker_missing_while_home_assistant_starts_plays_once_it_runs(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient, mode: SpeakerMode
) -> None:
    # ANNOUNCE sends play_media while the state is read: that one goes nowhere (Home
    # Assistant ignores a missing target), so it is sent again once the speaker is there
    scripted.core_state = "NOT_RUNNING"
    visit = SpeakerVisit(StateReader(client), KITCHEN, SpeakerSettings(mode=mode), margin_s=0)
    playing = asyncio.create_task(visit.play(playback(ttl_s=60)))
    await asyncio.sleep(0.3)
    assert not playing.done()
    await starts_after(scripted, 0.0, KITCHEN)
    result = await asyncio.wait_for(playing, 10)
    assert (result.ok, result.error) == (True, None)
    assert played(scripted, KITCHEN)[-1] == "play_media"
    sent_after_start = [c for c in scripted.calls if c[1] == "play_media"]
    assert len(sent_after_start) == (2 if mode is SpeakerMode.ANNOUNCE else 1)


async def test_a_speaker_restored_unavailable_while_home_assistant_starts_plays_once_it_runs(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient
) -> None:
    # from homeassistant_start, a registered entity its integration has not set up yet is
    # "unavailable" with restored: true
    scripted.core_state = "STARTING"
    scripted.states = [entity(KITCHEN, "unavailable", restored=True, supported_features=512)]
    visit = SpeakerVisit(StateReader(client), KITCHEN, SpeakerSettings(), margin_s=0)
    playing = asyncio.create_task(visit.play(playback(ttl_s=60)))
    await asyncio.sleep(0.3)
    assert not playing.done()
    assert played(scripted, KITCHEN) == []
    await starts_after(scripted, 0.0, KITCHEN)
    result = await asyncio.wait_for(playing, 10)
    assert (result.ok, result.error) == (True, None)
    assert played(scripted, KITCHEN) == ["play_media"]


async def test_a_speaker_unavailable_in_a_running_home_assistant_fails_at_once(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient
) -> None:
    scripted.states = [entity(KITCHEN, "unavailable", supported_features=512)]
    visit = SpeakerVisit(StateReader(client), KITCHEN, SpeakerSettings(), margin_s=0)
    result = await asyncio.wait_for(visit.play(playback(ttl_s=60)), 5)
    assert (result.ok, result.error) == (False, "the speaker is unavailable in Home Assistant")
    assert played(scripted, KITCHEN) == []


async def test_a_speaker_missing_from_a_running_home_assistant_fails_at_once(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient
) -> None:
    scripted.states = [entity("media_player.other")]
    visit = SpeakerVisit(StateReader(client), KITCHEN, SpeakerSettings(), margin_s=0)
    result = await asyncio.wait_for(visit.play(playback(ttl_s=60)), 5)
    assert (result.ok, result.error) == (False, "Home Assistant has no such entity")
    assert played(scripted, KITCHEN) == []
    assert scripted.config_reads == 1  # asked once whether it is starting


async def test_the_ttl_running_out_while_home_assistant_starts_expires_the_announcement(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient
) -> None:
    scripted.core_state = "STARTING"
    visit = SpeakerVisit(StateReader(client), KITCHEN, SpeakerSettings(), margin_s=0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await asyncio.wait_for(visit.play(playback(ttl_s=0.6)), 10)
    assert 0.5 <= loop.time() - started < 5
    assert result.expired
    assert result.error is not None
    assert "ttl ran out while Home Assistant was starting" in result.error
    assert played(scripted, KITCHEN) == []


async def test_a_satellite_missing_while_home_assistant_starts_announces_once_it_runs(
    scripted: ScriptedHomeAssistant, client: HomeAssistantClient, tmp_path: Path
) -> None:
    settings = config.load(data_dir=tmp_path)
    (tmp_path / "media").mkdir()
    media = MediaStore(tmp_path / "media", "http://oyez.lan")
    sink = SatelliteSink(client, SpeechPipeline(settings), media, settings.announce)
    scripted.core_state = "NOT_RUNNING"
    expires = datetime.now(UTC) + timedelta(seconds=60)
    request = SpeechRequest(id="s1", text="Dinner is ready.", expires_at=expires)
    delivering = asyncio.create_task(
        sink.deliver([SATELLITE], request, Announcement(message="Dinner is ready."))
    )
    await starts_after(scripted, 1.5, SATELLITE)  # after Piper has spoken it
    results, utterance = await asyncio.wait_for(delivering, 30)
    assert [(r.target, r.ok, r.error) for r in results] == [(SATELLITE, True, None)]
    assert utterance is not None
    announced = [(d, s, data) for d, s, data, t in scripted.calls if t == {"entity_id": SATELLITE}]
    assert [(d, s) for d, s, _ in announced] == [("assist_satellite", "announce")]
    assert announced[0][2]["message"] == "Dinner is ready."
