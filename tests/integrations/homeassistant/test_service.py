"""Oyez against a real Home Assistant (2025.4.4, demo integration, on 127.0.0.1): events in,
speakers and a simulated Discord voice channel out, results back as events, reconnection
after a restart, and the HTTP API.

The demo's ``media_player.living_room`` plays whatever ``play_media`` gives it (its state's
``media_content_id`` shows it); ``media_player.kitchen`` refuses ``play_media``.

Over 450 lines: one real Home Assistant is started for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.errors import ConfigError
from bot.ops import config
from bot.ops.config import Settings
from bot.service import Service
from integrations.discord.bot import OyezBot
from integrations.discord.service import DiscordSink
from integrations.discord.settings import DiscordSettings
from integrations.homeassistant.service import HomeAssistantFrontEnd, homeassistant_front_end
from integrations.homeassistant.websocket import (
    AuthenticationFailed,
    CommandFailed,
    HomeAssistantClient,
    HomeAssistantError,
)
from tests.fakes.discord import GUILD_ID, VOICE_CHANNEL_ID, FakeDiscord, client_options, running
from tests.fakes.discord import decode_opus as decode_discord_opus
from tests.fakes.discord.fixtures import fake_discord  # noqa: F401
from tests.support.asr import Transcriber, decode, word_error_rate
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    free_port,
    homeassistant,  # noqa: F401
    observing,
)
from tests.support.serving import front_end_of, served

LIVING_ROOM = "media_player.living_room"
KITCHEN = "media_player.kitchen"
DONE, FAILED = "oyez_announce_done", "oyez_announce_failed"
API_TOKEN = "test-api-token-0123456789"
MESSAGE = "The washing machine has finished."


def oyez_settings(ha: HomeAssistant, tmp_path: Path, **announce: Any) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0, "api_token": API_TOKEN},
        homeassistant={
            "url": ha.url,
            "token": ha.token,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "ping_interval_s": 5,
        },
        announce=announce,
    )


def front_end(service: Service) -> HomeAssistantFrontEnd:
    return front_end_of(service, HomeAssistantFrontEnd)


@contextlib.asynccontextmanager
async def running_oyez(
    settings: Settings, service: Service | None = None
) -> AsyncIterator[Service]:
    """``oyez run`` in a task, until Home Assistant's front end is connected."""
    if service is None:
        service = Service(settings)
        await service.build()
    async with served(service, HomeAssistantFrontEnd):
        yield service


def is_oyez_media(service: Service, url: Any) -> bool:
    return isinstance(url, str) and url.startswith(f"{service.server.media.base_url}/media/")


async def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status, dict(reply.headers), await reply.read()


def oyez_plays(observer: Observer, service: Service, entity: str) -> list[str]:
    """The Oyez media URLs ``entity`` was given, in order, from its state changes."""
    urls: list[str] = []
    for event in observer.events:
        if event["event_type"] != "state_changed" or event["data"]["entity_id"] != entity:
            continue
        url = ((event["data"].get("new_state") or {}).get("attributes") or {}).get(
            "media_content_id"
        )
        if isinstance(url, str) and is_oyez_media(service, url) and (not urls or urls[-1] != url):
            urls.append(url)
    return urls


def volumes(observer: Observer, entity: str) -> list[tuple[str, Any]]:
    """``("volume", level)`` and ``("media", url)`` changes of ``entity``, in order."""
    changes: list[tuple[str, Any]] = []
    for event in observer.events:
        if event["event_type"] != "state_changed" or event["data"]["entity_id"] != entity:
            continue
        old = (event["data"].get("old_state") or {}).get("attributes") or {}
        new = (event["data"].get("new_state") or {}).get("attributes") or {}
        if old.get("volume_level") != new.get("volume_level"):
            changes.append(("volume", new.get("volume_level")))
        if old.get("media_content_id") != new.get("media_content_id"):
            changes.append(("media", new.get("media_content_id")))
    return changes


async def test_event_is_spoken_on_the_speaker(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED) as ha,
    ):
        await ha.fire(
            "oyez_announce", {"message": MESSAGE, "media_player": LIVING_ROOM, "id": "w1"}
        )
        done = await ha.wait_event(lambda e: e["data"].get("request_id") == "w1")
        assert done["event_type"] == DONE, done
        data = done["data"]
        assert data["source"] == "homeassistant"
        assert data["provider"] == "piper"
        assert data["voice"]
        assert 1.0 < data["duration_s"] < 6.0
        assert data["targets"] == [
            {"target": LIVING_ROOM, "ok": True, "error": None, "duration_s": data["duration_s"]}
        ]
        state = await ha.state(LIVING_ROOM)
        url = state["attributes"]["media_content_id"]
        assert is_oyez_media(service, url)
        assert url.endswith(".mp3")
        token = url.rsplit("/", 1)[-1].removesuffix(".mp3")
        assert len(token) >= 22  # 128 random bits, base64url

        status, headers, audio = await fetch(url)
        assert status == 200
        assert headers["Content-Type"] == "audio/mpeg"
        assert int(headers["Content-Length"]) == len(audio)
        assert audio[:3] == b"ID3" or audio[0] == 0xFF
        assert word_error_rate(MESSAGE, transcriber.transcribe(audio)) <= 0.2
    assert homeassistant.token is not None
    assert homeassistant.token not in caplog.text


def tone_wav(frequency_hz: float, seconds: float, rate: int = 48_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * frequency_hz * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())
    return out.getvalue()


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


async def test_chime_plays_first_and_volume_is_set_then_restored(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path, chime_hosts=["127.0.0.1"])) as service,
        observing(homeassistant, DONE, FAILED, "state_changed") as ha,
    ):
        before = (await ha.state(LIVING_ROOM))["attributes"]["volume_level"]
        assert before != 0.3
        chime = service.server.media.publish(tone_wav(880, 0.6), "wav")
        await ha.fire(
            "oyez_announce",
            {
                "message": MESSAGE,
                "media_player": LIVING_ROOM,
                "chime": chime,
                "volume": 0.3,
                "id": "c1",
            },
        )
        done = await ha.wait_event(lambda e: e["data"].get("request_id") == "c1")
        assert done["event_type"] == DONE, done
        await ha.wait_state(LIVING_ROOM, lambda s: s["attributes"]["volume_level"] == before)
        # the volume went to 0.3 before the announcement was given, and back after it (then
        # the demo player, which lacks announce support, got its own media back)
        changes = volumes(ha, LIVING_ROOM)
        url = changes[1][1]
        assert is_oyez_media(service, url)
        assert changes[:3] == [("volume", 0.3), ("media", url), ("volume", before)], changes

        _, _, audio = await fetch(url)
        rate = 16_000
        samples = decode(audio, rate)
        length_s = len(samples) / rate
        speech_s = done["data"]["duration_s"]
        assert length_s == pytest.approx(0.6 + 0.3 + speech_s, abs=0.25)
        assert dominant_hz(samples[int(0.1 * rate) : int(0.5 * rate)], rate) == pytest.approx(
            880, abs=10
        )
        speech = samples[int(0.9 * rate) :]
        assert word_error_rate(MESSAGE, transcriber.transcribe_samples(speech)) <= 0.2


async def test_a_chime_url_the_owner_did_not_allow_fails_the_event_and_is_not_fetched(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    hits: list[str] = []

    async def internal(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="admin")

    app = web.Application()
    app.router.add_get("/{tail:.*}", internal)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    admin = f"http://127.0.0.1:{runner.addresses[0][1]}/internal-admin"
    try:
        async with (
            running_oyez(oyez_settings(homeassistant, tmp_path)),
            observing(homeassistant, DONE, FAILED) as ha,
        ):
            data = {"message": MESSAGE, "media_player": LIVING_ROOM, "chime": admin, "id": "s1"}
            await ha.fire("oyez_announce", data)
            event = await ha.wait_event(lambda e: e["data"].get("request_id") == "s1")
    finally:
        await runner.cleanup()
    assert event["event_type"] == FAILED, event
    assert event["data"]["code"] == "invalid"
    assert "not in announce.chime_hosts" in event["data"]["reason"]
    assert hits == []


async def test_refusing_speaker_fails_with_its_error_while_the_other_plays(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED) as ha,
    ):
        await ha.fire(
            "oyez_announce",
            {
                "message": "Dinner is ready.",
                "media_player": [KITCHEN, LIVING_ROOM, "media_player.nowhere"],
                "id": "k1",
            },
        )
        event = await ha.wait_event(lambda e: e["data"].get("request_id") == "k1")
        assert event["event_type"] == FAILED
        data = event["data"]
        assert data["state"] == "partial"
        assert data["code"] == "failed"
        by_target = {t["target"]: t for t in data["targets"]}
        assert by_target[LIVING_ROOM]["ok"] is True
        assert by_target[KITCHEN]["ok"] is False
        error = by_target[KITCHEN]["error"]
        assert "does not support action media_player.play_media" in error
        assert "service_validation_error" in error
        assert KITCHEN in data["reason"]
        # Home Assistant answers play_media on a missing entity with success: Oyez checks first
        assert by_target["media_player.nowhere"]["ok"] is False
        assert by_target["media_player.nowhere"]["error"] == "Home Assistant has no such entity"
        state = await ha.state(LIVING_ROOM)
        assert is_oyez_media(service, state["attributes"]["media_content_id"])
        kitchen = await ha.state(KITCHEN)
        assert not is_oyez_media(service, kitchen["attributes"].get("media_content_id"))


async def test_invalid_event_is_not_spoken_and_reported(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED, "state_changed") as ha,
    ):
        await ha.fire(
            "oyez_announce", {"media_player": LIVING_ROOM, "volume": 3, "colour": "red", "id": "b1"}
        )
        event = await ha.wait_event(lambda e: e["data"].get("request_id") == "b1")
        assert event["event_type"] == FAILED
        assert event["data"]["code"] == "invalid"
        reason = event["data"]["reason"]
        assert "message: required" in reason
        assert "volume:" in reason
        assert "colour: unknown field" in reason
        await ha.fire("oyez_announce", {"message": "hello", "media_player": "kitchen"})
        second = await ha.wait_event(
            lambda e: "'kitchen' is not a media player" in str(e["data"].get("reason"))
        )
        assert second["data"]["code"] == "invalid"
        assert oyez_plays(ha, service, LIVING_ROOM) == []


async def test_expired_announcement_is_not_spoken(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED, "state_changed") as ha,
    ):
        # a ttl far shorter than synthesis: it expires before it could be played
        await ha.fire(
            "oyez_announce",
            {"message": "Too late.", "media_player": LIVING_ROOM, "ttl": 0.001, "id": "t1"},
        )
        event = await ha.wait_event(lambda e: e["data"].get("request_id") == "t1")
        assert event["event_type"] == FAILED
        assert event["data"]["state"] == "expired"
        assert event["data"]["code"] == "expired"
        await asyncio.sleep(1)
        assert oyez_plays(ha, service, LIVING_ROOM) == []


async def test_duplicate_within_the_window_is_spoken_once(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path, duplicate_window_s=30)) as service,
        observing(homeassistant, DONE, FAILED, "state_changed") as ha,
    ):
        data = {"message": "Someone is at the front door.", "media_player": LIVING_ROOM}
        await ha.fire("oyez_announce", {**data, "id": "d1"})
        await ha.fire(
            "oyez_announce", {**data, "message": "someone is at the  FRONT door.", "id": "d2"}
        )
        first = await ha.wait_event(lambda e: e["data"].get("request_id") == "d1")
        second = await ha.wait_event(lambda e: e["data"].get("request_id") == "d2")
        assert first["event_type"] == DONE
        assert second["event_type"] == FAILED
        assert second["data"]["state"] == "suppressed"
        assert second["data"]["code"] == "duplicate"
        assert "d1" in second["data"]["reason"]
        await asyncio.sleep(1)
        assert len(oyez_plays(ha, service, LIVING_ROOM)) == 1


async def test_reconnects_after_home_assistant_restarts(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_oyez(oyez_settings(homeassistant, tmp_path)) as service:
        client = front_end(service).client
        await homeassistant.restart()
        await client.wait_connected(60)
        assert client.reconnects == 1
        assert "reconnected after" in caplog.text
        assert "events in that gap are lost" in caplog.text
        async with observing(homeassistant, DONE, FAILED) as ha:
            await ha.fire(
                "oyez_announce", {"message": "Back again.", "media_player": LIVING_ROOM, "id": "r1"}
            )
            done = await ha.wait_event(lambda e: e["data"].get("request_id") == "r1")
            assert done["event_type"] == DONE, done
            state = await ha.state(LIVING_ROOM)
            assert is_oyez_media(service, state["attributes"]["media_content_id"])
    assert homeassistant.token is not None
    assert homeassistant.token not in caplog.text


async def test_discord_target_is_spoken_in_the_voice_channel(
    homeassistant: HomeAssistant,  # noqa: F811
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    hall = {"guild_id": int(GUILD_ID), "channel_id": int(VOICE_CHANNEL_ID)}
    settings = oyez_settings(homeassistant, tmp_path, discord_channels={"hall": hall})
    service = Service(settings)
    await service.build()
    bot = OyezBot(service.pipeline, DiscordSettings(idle_timeout_s=60), **client_options())
    service.announcer.add_sink(DiscordSink(bot))
    async with (
        running(bot),
        running_oyez(settings, service),
        observing(homeassistant, DONE, FAILED) as ha,
    ):
        await ha.fire(
            "oyez_announce",
            {"message": MESSAGE, "discord": "hall", "media_player": LIVING_ROOM, "id": "dc1"},
        )
        done = await ha.wait_event(lambda e: e["data"].get("request_id") == "dc1")
        assert done["event_type"] == DONE, done
        targets = {t["target"] for t in done["data"]["targets"]}
        assert targets == {LIVING_ROOM, f"discord:{GUILD_ID}/{VOICE_CHANNEL_ID}"}
        frames = fake_discord.voice.voice_frames()
        assert len(frames) * 0.020 == pytest.approx(done["data"]["duration_s"], rel=0.1)
        pcm = decode_discord_opus([p.opus for p in frames])
        heard = transcriber.transcribe_samples(pcm.mean(axis=1)[::3])
        assert word_error_rate(MESSAGE, heard) <= 0.2


async def test_http_api_announces_on_the_speaker(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        running_oyez(oyez_settings(homeassistant, tmp_path)) as service,
        observing(homeassistant, DONE, FAILED) as ha,
        aiohttp.ClientSession() as session,
    ):
        api = f"http://127.0.0.1:{service.server.port}/api/v1"
        body = {"message": "The bins go out tonight.", "media_player": LIVING_ROOM}
        async with session.post(f"{api}/announce", json=body) as reply:
            assert reply.status == 401
        async with session.post(
            f"{api}/announce", json=body, headers={"Authorization": "Bearer wrong"}
        ) as reply:
            assert reply.status == 401
        assert not is_oyez_media(
            service, (await ha.state(LIVING_ROOM))["attributes"].get("media_content_id")
        )
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with session.post(f"{api}/announce", json=body, headers=auth) as reply:
            assert reply.status == 202
            accepted = await reply.json()
            request_id = accepted["request_id"]
            assert reply.headers["Location"] == f"/api/v1/requests/{request_id}"
        async with asyncio.timeout(60):
            while True:
                async with session.get(f"{api}/requests/{request_id}", headers=auth) as reply:
                    assert reply.status == 200
                    status = await reply.json()
                if status["state"] not in ("queued", "speaking"):
                    break
                await asyncio.sleep(0.1)
        assert status["state"] == "done", status
        assert status["source"] == "http"
        state = await ha.state(LIVING_ROOM)
        assert is_oyez_media(service, state["attributes"]["media_content_id"])
        done = await ha.wait_event(lambda e: e["data"].get("request_id") == request_id)
        assert done["event_type"] == DONE


async def test_wrong_token_or_address_is_a_clear_error_at_start(
    homeassistant: HomeAssistant,  # noqa: F811
) -> None:
    wrong = "not-the-token-1234567890"
    client = HomeAssistantClient(homeassistant.websocket_url, SecretStr(wrong))
    with pytest.raises(AuthenticationFailed, match="refused the access token") as refused:
        await client.connect()
    assert wrong not in str(refused.value)
    nobody = HomeAssistantClient(
        f"ws://127.0.0.1:{free_port()}/api/websocket", SecretStr(wrong), request_timeout_s=5
    )
    with pytest.raises(HomeAssistantError, match="cannot connect to Home Assistant at ws://"):
        await nobody.connect()


async def test_client_commands_share_one_connection_with_increasing_ids(
    homeassistant: HomeAssistant,  # noqa: F811
) -> None:
    assert homeassistant.token is not None
    async with HomeAssistantClient(
        homeassistant.websocket_url, SecretStr(homeassistant.token)
    ) as client:
        assert client.ha_version == "2025.4.4"
        results = await asyncio.gather(
            *(client.get_states() if i % 2 else client.ping() for i in range(40))
        )
        assert all(isinstance(r, list) and r for r in results[1::2])
        with pytest.raises(CommandFailed) as refused:
            await client.call_service(
                "media_player",
                "play_media",
                {"media_content_id": "http://127.0.0.1/x.mp3", "media_content_type": "music"},
                target={"entity_id": KITCHEN},
            )
        assert refused.value.code == "service_validation_error"
        assert "does not support action" in refused.value.message


# -- without Home Assistant ----------------------------------------------------------------------


def test_front_end_is_configured_by_url_and_token_together(tmp_path: Path) -> None:
    assert homeassistant_front_end(Service(config.load(data_dir=tmp_path)).parts) is None
    half = config.load(data_dir=tmp_path, homeassistant={"url": "http://ha.lan:8123"})
    with pytest.raises(ConfigError, match="url and token go together"):
        homeassistant_front_end(Service(half).parts)
    both = config.load(
        data_dir=tmp_path, homeassistant={"url": "https://ha.lan:8123/", "token": "t0ken-xyz"}
    )
    service = Service(both)
    made = homeassistant_front_end(service.parts)
    assert made is not None
    assert made.client.url == "wss://ha.lan:8123/api/websocket"
    assert "media_player" in service.announcer.sinks
    assert made.ready() == (False, "not connected to Home Assistant")


@pytest.mark.parametrize(
    ("ha_url", "public_url", "warned"),
    [
        ("http://homeassistant.lan:8123", None, True),
        ("http://homeassistant.lan:8123", "http://localhost:8080", True),
        ("http://homeassistant.lan:8123", "http://192.168.1.20:8080", False),
        ("http://127.0.0.1:8123", None, False),
    ],
)
async def test_loopback_media_url_is_warned_about_when_home_assistant_is_remote(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ha_url: str,
    public_url: str | None,
    warned: bool,
) -> None:
    settings = config.load(
        data_dir=tmp_path,
        homeassistant={"url": ha_url, "token": "t0ken-xyz", "request_timeout_s": 2},
        http={"public_url": public_url, "port": 0},
    )
    made = homeassistant_front_end(Service(settings).parts)
    assert made is not None
    made.client.url = f"ws://127.0.0.1:{free_port()}/api/websocket"  # nobody: start fails fast
    with pytest.raises(HomeAssistantError):
        await made.start()
    assert ("speakers cannot reach it" in caplog.text) is warned
    assert "t0ken-xyz" not in caplog.text
