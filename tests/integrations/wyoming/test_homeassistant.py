"""Oyez as a text-to-speech engine of a real Home Assistant (2025.4.4, wyoming 1.5.4), added
through Home Assistant's own Wyoming config flow: its ``tts`` entity offers Piper's voices and
the cloud providers' (Segmind and Together, simulated; Segmind speaking with Piper), and
``tts.speak`` on a demo speaker gives a URL whose audio, fetched from Home Assistant as the
speaker would, says the message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bot.ops import config
from bot.ops.config import Settings
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.fakes.together import DEFAULT_API_KEY as TOGETHER_KEY
from tests.fakes.together import FakeTogether
from tests.support.asr import Transcriber, word_error_rate
from tests.support.homeassistant import (
    HomeAssistant,
    Observer,
    free_port,
    homeassistant,  # noqa: F401
    observing,
)
from tests.support.speech import piper_pcm
from tests.support.wyoming_peers import add_wyoming, remove_entry, running_wyoming

LIVING_ROOM = "media_player.living_room"
ENGINE = "tts.oyez"
PIPER = "piper/en_US-joe-medium"
ORPHEUS = "segmind/orpheus-3b-0.1/dan"
KOKORO = "together/hexgrad/Kokoro-82M/af_bella"


def oyez_settings(
    tmp_path: Path, port: int, segmind: FakeSegmind, together: FakeTogether
) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        wyoming={"uri": f"tcp://127.0.0.1:{port}"},
        providers={
            "segmind": {"api_key": DEFAULT_API_KEY, "base_url": segmind.base_url},
            "together": {"api_key": TOGETHER_KEY, "base_url": together.base_url},
        },
    )


@contextlib.asynccontextmanager
async def oyez_in_homeassistant(
    ha: HomeAssistant, tmp_path: Path, segmind: FakeSegmind
) -> AsyncIterator[dict[str, Any]]:
    """Oyez running (Segmind and Together configured), added to Home Assistant as a Wyoming
    engine (removed again after)."""
    port = free_port()
    async with (
        FakeTogether() as together,
        running_wyoming(oyez_settings(tmp_path, port, segmind, together)),
    ):
        entry = await add_wyoming(ha, port)
        try:
            yield entry
        finally:
            await remove_entry(ha, entry["entry_id"])


async def speak(ha: Observer, message: str, voice: str) -> bytes:
    """``tts.speak`` with Oyez on the living room speaker; the audio behind the URL it was
    given, fetched from Home Assistant."""
    status, audio = await fetch_spoken(ha, message, voice)
    assert status == 200, audio[:200]
    return audio


async def fetch_spoken(ha: Observer, message: str, voice: str) -> tuple[int, bytes]:
    """:func:`speak`'s HTTP status and body, whatever they are."""
    before = (await ha.state(LIVING_ROOM))["attributes"].get("media_content_id")
    await ha.command(
        {
            "type": "call_service",
            "domain": "tts",
            "service": "speak",
            "service_data": {
                "media_player_entity_id": LIVING_ROOM,
                "message": message,
                "language": "en_US",
                "options": {"voice": voice},
            },
            "target": {"entity_id": ENGINE},
        }
    )
    state = await ha.wait_state(
        LIVING_ROOM, lambda s: s["attributes"].get("media_content_id") not in (None, before)
    )
    media_id = state["attributes"]["media_content_id"]
    assert media_id.startswith(f"media-source://tts/{ENGINE}"), media_id
    # what a speaker integration does with a media-source id: resolve it to a URL, fetch that
    resolve = {"type": "media_source/resolve_media", "media_content_id": media_id}
    url = ha.ha.url + (await ha.command(resolve))["url"]
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status, await reply.read()


async def test_home_assistant_speaks_with_oyez_voices(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    async with (
        FakeSegmind(synthesizer=piper_pcm) as segmind,
        oyez_in_homeassistant(homeassistant, tmp_path, segmind) as entry,
        observing(homeassistant) as ha,
    ):
        assert entry["title"] == "Oyez"
        engine = await ha.state(ENGINE)
        assert engine["state"] != "unavailable"
        for language in ("en_US", "en"):
            listed = await ha.command(
                {"type": "tts/engine/voices", "engine_id": ENGINE, "language": language}
            )
            voices = {v["voice_id"]: v["name"] for v in listed["voices"]}
            assert voices[PIPER] == "Piper — joe (medium)"
            assert voices[ORPHEUS] == "Segmind Orpheus 3B — dan"
            assert voices[KOKORO] == "Together Kokoro-82M — af_bella"

        message = "The garage door is still open."
        audio = await speak(ha, message, PIPER)
        assert audio[:3] == b"ID3" or audio[0] == 0xFF  # Home Assistant's MP3 for speakers
        assert word_error_rate(message, transcriber.transcribe(audio)) <= 0.2
        assert segmind.requests == []

        cloud = "The parcel has been delivered."
        audio = await speak(ha, cloud, ORPHEUS)
        (call,) = segmind.requests_to("/v1/orpheus-3b-0.1")
        assert (call.json["text"], call.json["voice"]) == (cloud, "dan")
        assert word_error_rate(cloud, transcriber.transcribe(audio)) <= 0.2

        segmind.inject_error("/v1/orpheus-3b-0.1", 406, "Insufficient credits")
        fallback = "The bins go out tonight."
        audio = await speak(ha, fallback, ORPHEUS)
        assert len(segmind.requests_to("/v1/orpheus-3b-0.1")) == 2  # asked, then Piper spoke
        assert word_error_rate(fallback, transcriber.transcribe(audio)) <= 0.2


async def test_an_unknown_voice_fails_the_request_and_the_engine_goes_on(
    homeassistant: HomeAssistant,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    """Home Assistant's client waits for audio until the connection closes: Oyez closes it
    after its error, so the request fails in seconds instead of hanging."""
    async with (
        FakeSegmind() as segmind,
        oyez_in_homeassistant(homeassistant, tmp_path, segmind),
        observing(homeassistant) as ha,
    ):
        started = time.perf_counter()
        status, _ = await fetch_spoken(ha, "Nobody says this.", "piper/nobody")
        assert status != 200
        assert time.perf_counter() - started < 10
        message = "The engine still works."
        audio = await speak(ha, message, PIPER)
        assert word_error_rate(message, transcriber.transcribe(audio)) <= 0.2
