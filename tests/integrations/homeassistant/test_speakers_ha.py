"""Speakers against a real Home Assistant (2025.4.4, demo integration, on 127.0.0.1): two
announcements to one speaker play one after the other, a speaker without announce support
(the demo players lack ``MEDIA_ANNOUNCE``) plays what it was playing again, at its volume, and
a speaker fetches an announcement while its later sentences are still being made (or, with
``content_length: true``, gets the whole file).

What Oyez asked of Home Assistant is read from Home Assistant's own ``call_service`` events
(each with its ``service_data`` and ``time_fired``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.ops import config
from bot.ops.config import Settings
from integrations.homeassistant.visit import MEDIA_ANNOUNCE
from tests.integrations.homeassistant.test_service import is_oyez_media, running_oyez
from tests.support.asr import Transcriber, word_error_rate
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    homeassistant,  # noqa: F401
    observing,
)

LIVING_ROOM = "media_player.living_room"
BEDROOM = "media_player.bedroom"
DONE, FAILED = "oyez_announce_done", "oyez_announce_failed"


def settings(ha: HomeAssistant, tmp_path: Path, **speakers: Any) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        homeassistant={"url": ha.url, "token": ha.token, "speakers": speakers},
    )


def calls(observer: Observer, entity: str, service: str | None = None) -> list[dict[str, Any]]:
    """Home Assistant's ``call_service`` events on ``entity`` (of ``service``), in order."""
    found = []
    for event in observer.events:
        data = event.get("data") or {}
        if event["event_type"] != "call_service" or data.get("domain") != "media_player":
            continue
        target = (data.get("service_data") or {}).get("entity_id")
        targets = target if isinstance(target, list) else [target]
        if entity in targets and service in (None, data.get("service")):
            found.append(event)
    return found


SAX = {"media_content_id": "kxopViU98Xo", "media_content_type": "movie"}


async def prepare(observer: Observer, entity: str, *actions: tuple[str, dict[str, Any]]) -> None:
    """The demo player ``entity`` on :data:`SAX`, then ``actions`` (service, data) on it."""
    for action, data in [("play_media", SAX), *actions]:
        await observer.command(
            {
                "type": "call_service",
                "domain": "media_player",
                "service": action,
                "service_data": data,
                "target": {"entity_id": entity},
            }
        )


def answering(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (event.get("data") or {}).get("request_id") == request_id


def fired_s(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time_fired"]).timestamp()


async def test_two_announcements_to_one_speaker_play_one_after_the_other(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    messages = {"q1": "The post has arrived.", "q2": "The oven has reached its temperature."}
    async with (
        running_oyez(settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED, "call_service") as ha,
    ):
        before = await ha.state(LIVING_ROOM)
        assert not before["attributes"]["supported_features"] & MEDIA_ANNOUNCE
        for request_id, message in messages.items():
            await ha.fire(
                "oyez_announce", {"message": message, "media_player": LIVING_ROOM, "id": request_id}
            )
        done = {r: await ha.wait_event(answering(r)) for r in messages}
        assert all(e["event_type"] == DONE for e in done.values()), done
        # after both: what it was playing is played again
        await ha.wait_event(
            lambda e: (
                e["event_type"] == "call_service"
                and (e["data"].get("service_data") or {}).get("media_content_id")
                == before["attributes"]["media_content_id"]
            )
        )
        plays = [
            e
            for e in calls(ha, LIVING_ROOM, "play_media")
            if is_oyez_media(service, e["data"]["service_data"]["media_content_id"])
        ]
        assert len(plays) == 2, plays
        first, second = plays
        first_id = next(
            r for r, m in messages.items() if m == first["data"]["service_data"]["extra"]["title"]
        )
        length_s = done[first_id]["data"]["duration_s"]
        # the second started once the first had finished, not on top of it
        assert fired_s(second) - fired_s(first) >= length_s
        assert fired_s(second) - fired_s(first) < length_s + 5
        resumed = calls(ha, LIVING_ROOM, "play_media")[-1]
        assert (
            fired_s(resumed) - fired_s(second)
            >= done[next(r for r in messages if r != first_id)]["data"]["duration_s"]
        )
        # a speaker without MEDIA_ANNOUNCE is not asked to announce: Oyez puts it back itself
        assert all("announce" not in e["data"]["service_data"] for e in plays)


async def test_a_speaker_without_announce_plays_its_media_again_at_its_volume(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with observing(homeassistant, DONE, FAILED, "call_service") as ha:
        await prepare(ha, BEDROOM, ("media_play", {}), ("volume_set", {"volume_level": 0.45}))
        before = await ha.state(BEDROOM)
        assert before["state"] == "playing"
        speakers = {BEDROOM: {"mode": "auto", "restore_delay_s": 0.5}}
        async with running_oyez(settings(homeassistant, tmp_path, **speakers)) as service:
            await ha.fire(
                "oyez_announce",
                {"message": "Dinner is ready.", "media_player": BEDROOM, "volume": 0.8, "id": "v1"},
            )
            done = await ha.wait_event(lambda e: e["data"].get("request_id") == "v1")
            assert done["event_type"] == DONE, done
            during = await ha.state(BEDROOM)
            assert is_oyez_media(service, during["attributes"]["media_content_id"])
            assert during["attributes"]["volume_level"] == 0.8
            after = await ha.wait_state(
                BEDROOM, lambda s: s["attributes"]["media_content_id"] == "kxopViU98Xo"
            )
        assert after["state"] == "playing"
        assert after["attributes"]["volume_level"] == 0.45
        assert after["attributes"]["media_content_type"] == "movie"
        events = calls(ha, BEDROOM)
        asked = [(e["data"]["service"], e["data"]["service_data"]) for e in events]
        announcement = next(
            d
            for s, d in asked
            if s == "play_media" and is_oyez_media(service, d["media_content_id"])
        )
        assert announcement["extra"]["volume"] == 80  # what Sonos takes, 0-100
        assert "announce" not in announcement
        services = [s for s, _ in asked[3:]]
        # the volume, then the announcement; after it the volume first, then the media again,
        # sought to where it was (the demo player refuses media_seek: logged, harmless)
        assert services[:5] == [
            "volume_set",
            "play_media",
            "volume_set",
            "play_media",
            "media_seek",
        ]
        assert asked[3 + 3][1]["media_content_id"] == "kxopViU98Xo"
        # put back once the announcement (plus 1 s for the speaker, plus restore_delay_s) is over
        put_back_s = fired_s(events[3 + 2]) - fired_s(events[3 + 1])
        assert put_back_s >= done["data"]["duration_s"] + 1.0 + 0.5
        position = before["attributes"]["media_position"]
        assert asked[3 + 4][1]["seek_position"] >= position


async def test_a_paused_speaker_is_paused_again_on_its_media(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with observing(homeassistant, DONE, FAILED, "call_service") as ha:
        await prepare(ha, BEDROOM, ("media_pause", {}))
        assert (await ha.state(BEDROOM))["state"] == "paused"
        async with running_oyez(settings(homeassistant, tmp_path)) as service:
            await ha.fire(
                "oyez_announce", {"message": "Lights out.", "media_player": BEDROOM, "id": "p1"}
            )
            assert (await ha.wait_event(answering("p1")))["event_type"] == DONE
            await ha.wait_event(
                lambda e: (
                    e["event_type"] == "call_service"
                    and e["data"]["service"] == "media_pause"
                    and fired_s(e) > fired_s(calls(ha, BEDROOM, "play_media")[-1])
                )
            )
        after = await ha.state(BEDROOM)
        assert after["state"] == "paused"
        assert after["attributes"]["media_content_id"] == SAX["media_content_id"]
        assert not is_oyez_media(service, after["attributes"]["media_content_id"])


async def test_force_announce_sends_announce_and_leaves_the_rest_to_the_speaker(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    speakers = {BEDROOM: {"mode": "announce"}}
    async with observing(homeassistant, DONE, FAILED, "call_service") as ha:
        await prepare(ha, BEDROOM, ("media_play", {}))
        async with running_oyez(settings(homeassistant, tmp_path, **speakers)) as service:
            await ha.fire(
                "oyez_announce", {"message": "Lights out.", "media_player": BEDROOM, "id": "f1"}
            )
            done = await ha.wait_event(answering("f1"))
            assert done["event_type"] == DONE
            await asyncio.sleep(done["data"]["duration_s"] + 2.0)
        plays = calls(ha, BEDROOM, "play_media")
        assert is_oyez_media(service, plays[-1]["data"]["service_data"]["media_content_id"])
        assert plays[-1]["data"]["service_data"]["announce"] is True  # and nothing played after


async def test_an_announcement_whose_ttl_runs_out_in_line_is_not_spoken_late(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    long = (
        "This is a long announcement, so that the speaker stays busy for a good while: the "
        "washing machine, the dryer and the dishwasher have all finished their programmes."
    )
    async with (
        running_oyez(settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED, "call_service") as ha,
    ):
        await ha.fire("oyez_announce", {"message": long, "media_player": LIVING_ROOM, "id": "l1"})
        first = await ha.wait_event(answering("l1"))  # playing now
        await ha.fire(
            "oyez_announce",
            {"message": "Quick!", "media_player": LIVING_ROOM, "ttl": 3, "id": "l2"},
        )
        second = await ha.wait_event(answering("l2"))
        assert first["event_type"] == DONE
        assert first["data"]["duration_s"] > 5
        assert second["event_type"] == FAILED
        assert second["data"]["state"] == "expired"
        assert "while the speaker was busy" in second["data"]["reason"]
        oyez = [
            e
            for e in calls(ha, LIVING_ROOM, "play_media")
            if is_oyez_media(service, e["data"]["service_data"]["media_content_id"])
        ]
        assert len(oyez) == 1


THREE_SENTENCES = (
    "The washing machine has finished its long cycle. The dryer in the cellar needs emptying "
    "now. Dinner will be served at seven o'clock tonight."
)


async def oyez_url_given(observer: Observer, service: Any, entity: str) -> str:
    """The Oyez media URL ``entity`` is given in a ``play_media``, waiting for it."""

    while True:
        since = len(observer.events)
        for event in calls(observer, entity, "play_media"):
            media = event["data"]["service_data"].get("media_content_id")
            if is_oyez_media(service, media):
                return str(media)
        await observer.wait_event(lambda _: True, since=since)


async def test_a_speaker_fetches_the_announcement_while_its_later_sentences_are_made(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    async with (
        running_oyez(settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED, "call_service") as ha,
    ):
        await ha.fire(
            "oyez_announce", {"message": THREE_SENTENCES, "media_player": LIVING_ROOM, "id": "g1"}
        )
        url = await oyez_url_given(ha, service, LIVING_ROOM)
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "audio/mpeg"
            # served while it is made: chunked, no length yet
            assert "Content-Length" not in reply.headers
            first = await reply.content.readany()
            # the first sentence is here; the announcement is done once all three are made
            assert not ha.request_events("g1")
            first_at = time.time()
            audio = first + await reply.read()
        done = await ha.wait_event(answering("g1"))
        assert done["event_type"] == DONE, done
        assert fired_s(done) > first_at - 0.05
    assert audio[:3] == b"ID3"
    assert word_error_rate(THREE_SENTENCES, transcriber.transcribe(audio)) <= 0.2
    assert 5.0 < done["data"]["duration_s"] < 15.0


async def test_a_speaker_that_needs_a_content_length_gets_the_whole_file(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    speakers = {LIVING_ROOM: {"content_length": True}}
    async with (
        running_oyez(settings(homeassistant, tmp_path, **speakers)) as service,
        observing(homeassistant, DONE, FAILED, "call_service") as ha,
    ):
        await ha.fire(
            "oyez_announce", {"message": THREE_SENTENCES, "media_player": LIVING_ROOM, "id": "c1"}
        )
        url = await oyez_url_given(ha, service, LIVING_ROOM)
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            assert reply.status == 200
            length = int(reply.headers["Content-Length"])
            audio = await reply.read()
        assert (await ha.wait_event(answering("c1")))["event_type"] == DONE
    assert length == len(audio)
    assert word_error_rate(THREE_SENTENCES, transcriber.transcribe(audio)) <= 0.2
