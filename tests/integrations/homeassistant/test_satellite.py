"""Announcements on a voice satellite in a real Home Assistant (2025.4.4): a small Wyoming
satellite (tests/support/wyoming_peers.py) added through Home Assistant's own Wyoming config
flow becomes an ``assist_satellite`` entity; an ``oyez_announce`` event naming it reaches it as
audio (Home Assistant converts Oyez's MP3 and streams PCM) that says the message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.announce.model import Announcement
from bot.errors import InvalidRequest
from bot.ops import config
from bot.ops.config import Settings
from bot.service import Service
from bot.synthesis.pipeline import SpeechPipeline
from bot.web.server import MediaStore
from integrations.homeassistant.satellite import SatelliteSink
from integrations.homeassistant.service import HomeAssistantFrontEnd
from integrations.homeassistant.websocket import HomeAssistantClient
from tests.support.asr import Transcriber, word_error_rate
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    homeassistant,  # noqa: F401
    observing,
)
from tests.support.serving import served
from tests.support.wyoming_peers import RecordingSatellite, add_wyoming, heard, remove_entry

DONE, FAILED = "oyez_announce_done", "oyez_announce_failed"
MESSAGE = "The front door has been left open."


def oyez_settings(ha: HomeAssistant, tmp_path: Path, **client: float) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        homeassistant={"url": ha.url, "token": ha.token, "reconnect_min_s": 0.2, **client},
    )


@contextlib.asynccontextmanager
async def running_oyez(settings: Settings) -> AsyncIterator[Service]:
    service = Service(settings)
    await service.build()
    async with served(service, HomeAssistantFrontEnd):
        yield service


@contextlib.asynccontextmanager
async def satellite_in(
    ha: HomeAssistant, observer: Observer, *, real_time: bool = False
) -> AsyncIterator[tuple[RecordingSatellite, str]]:
    """A recording satellite added to Home Assistant; (it, its entity id) once it runs."""
    async with RecordingSatellite(real_time=real_time) as satellite:
        entry = await add_wyoming(ha, satellite.port)
        try:
            assert entry["title"] == satellite.name
            async with asyncio.timeout(30):
                await satellite.running.wait()
            states = await observer.command({"type": "get_states"})
            (entity,) = [
                s["entity_id"] for s in states if s["entity_id"].startswith("assist_satellite.")
            ]
            await observer.wait_state(entity, lambda s: s["state"] == "idle")
            yield satellite, entity
        finally:
            await remove_entry(ha, entry["entry_id"])


async def test_an_announcement_reaches_a_voice_satellite(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    async with (
        observing(homeassistant, DONE, FAILED) as ha,
        satellite_in(homeassistant, ha) as (satellite, entity),
        running_oyez(oyez_settings(homeassistant, tmp_path)),
    ):
        await ha.fire("oyez_announce", {"message": MESSAGE, "satellite": entity, "id": "sat1"})
        done = await ha.wait_event(lambda e: e["data"].get("request_id") == "sat1")
        assert done["event_type"] == DONE, done
        (target,) = done["data"]["targets"]
        assert (target["target"], target["ok"]) == (entity, True)
        (recording,) = satellite.recordings
    assert (recording.width, recording.channels) == (2, 1)
    assert recording.duration_s == pytest.approx(target["duration_s"], abs=0.3)
    assert (
        word_error_rate(MESSAGE, heard(transcriber, recording.rate, bytes(recording.audio))) <= 0.2
    )


async def test_an_announcement_longer_than_the_request_timeout_is_not_failed(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Home Assistant answers announce once the satellite has played it: ~1.9 s of speech here,
    # with a 1 s request timeout, must still end done, not "did not answer within 1 s"
    TIMEOUT_S = 1.0  # noqa: N806 - a constant of this test
    settings = oyez_settings(homeassistant, tmp_path, request_timeout_s=TIMEOUT_S)
    async with (
        observing(homeassistant, DONE, FAILED) as ha,
        satellite_in(homeassistant, ha, real_time=True) as (satellite, entity),
        running_oyez(settings),
    ):
        await ha.fire("oyez_announce", {"message": MESSAGE, "satellite": entity, "id": "sat3"})
        done = await ha.wait_event(lambda e: e["data"].get("request_id") == "sat3")
        assert done["event_type"] == DONE, done
        (recording,) = satellite.recordings
    assert recording.duration_s > 1.5 * TIMEOUT_S  # it took longer than the timeout to play


async def test_a_missing_satellite_fails_its_target(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        observing(homeassistant, DONE, FAILED) as ha,
        running_oyez(oyez_settings(homeassistant, tmp_path)),
    ):
        data = {"message": MESSAGE, "satellite": "assist_satellite.nowhere", "id": "sat2"}
        await ha.fire("oyez_announce", data)
        failed = await ha.wait_event(lambda e: e["data"].get("request_id") == "sat2")
    assert failed["event_type"] == FAILED
    (target,) = failed["data"]["targets"]
    assert target == {
        "target": "assist_satellite.nowhere",
        "ok": False,
        "error": "Home Assistant has no such entity",
        "duration_s": None,
    }


def test_a_satellite_target_must_be_an_assist_satellite() -> None:
    assert Announcement.parse(
        {"message": "Hi.", "satellite": "assist_satellite.kitchen"}
    ).satellite == ["assist_satellite.kitchen"]
    with pytest.raises(InvalidRequest, match="is not a voice satellite entity id"):
        Announcement.parse({"message": "Hi.", "satellite": ["media_player.kitchen"]})


@pytest.mark.parametrize(
    ("chime", "chime_url", "expected"),
    [
        (False, "http://chimes.lan/ding.mp3", {"preannounce": False}),
        (True, None, {"preannounce": True}),  # the satellite's own chime
        (
            True,
            "http://chimes.lan/ding.mp3",
            {"preannounce": True, "preannounce_media_id": "http://chimes.lan/ding.mp3"},
        ),
    ],
)
async def test_the_chime_becomes_preannounce(
    tmp_path: Path, chime: bool, chime_url: str | None, expected: dict[str, Any]
) -> None:
    sink = satellite_sink(tmp_path, chime_url=chime_url)
    assert await sink._preannounce(Announcement(message="Hi.", chime=chime)) == expected


async def test_a_chime_file_is_published_for_the_satellite(tmp_path: Path) -> None:
    (tmp_path / "ding.wav").write_bytes(b"RIFF....WAVE")
    sink = satellite_sink(tmp_path, chimes={"ding": str(tmp_path / "ding.wav")})
    chosen = await sink._preannounce(Announcement(message="Hi.", chime="ding"))
    url = chosen["preannounce_media_id"]
    assert url.startswith("http://oyez.lan/media/") and url.endswith(".wav")
    assert sink.media.audio(url.rsplit("/", 1)[-1]) == b"RIFF....WAVE"
    sink = satellite_sink(tmp_path, chimes={"ding": str(tmp_path / "ding.flac")})
    with pytest.raises(InvalidRequest, match=r"not an \.mp3, \.wav or \.ogg file"):
        await sink._preannounce(Announcement(message="Hi.", chime="ding"))


def satellite_sink(tmp_path: Path, **announce: Any) -> SatelliteSink:
    settings = config.load(data_dir=tmp_path, announce=announce)
    (tmp_path / "media").mkdir(exist_ok=True)
    media = MediaStore(tmp_path / "media", "http://oyez.lan")
    client = HomeAssistantClient("ws://127.0.0.1:1/api/websocket", SecretStr("unused"))
    return SatelliteSink(client, SpeechPipeline(settings), media, settings.announce)
