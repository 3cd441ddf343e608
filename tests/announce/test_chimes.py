"""Where chimes come from: only the owner's configuration (``announce.chime_url``,
``announce.chimes``, ``announce.chime_hosts``); any other URL an announcement names is refused
with its reason (422 on the HTTP API, a failed status for Home Assistant) and never fetched."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bot.announce.announcer import Announcer
from bot.announce.model import Announcement, AnnouncementState, chime_source
from bot.audio.transcode import Transcoder
from bot.errors import ConfigError, InvalidRequest
from bot.ops import config
from bot.ops.config import AnnounceSettings
from bot.speech import RequestSource
from bot.web.server import OyezServer
from integrations.homeassistant.sink import MediaPlayerSink
from tests.support.clock import NOON, FakeClock
from tests.support.sinks import RecordingSink

TOKEN = "api-token-for-tests-0123"
PLAYER = "media_player.kitchen"


class Internal:
    """A server standing for what must not be reached: it counts every request."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("/internal-admin")
        return web.Response(body=b"secret admin page")


@pytest.fixture
async def internal() -> AsyncIterator[Internal]:
    target = Internal()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    target.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield target
    await runner.cleanup()


def tone_wav(seconds: float = 0.3, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(b"\x00\x10" * int(seconds * rate))
    return out.getvalue()


def announce(**settings: Any) -> AnnounceSettings:
    return AnnounceSettings.model_validate(settings)


# -- the rule ------------------------------------------------------------------------------------


def test_only_configured_chimes_and_listed_hosts_are_sources() -> None:
    owner = announce(
        chime_url="https://chimes.example.com/ding.mp3",
        chimes={"door": "/srv/chimes/door.wav", "bell": "https://cdn.example.org/bell.ogg"},
        chime_hosts=["Media.Example.NET"],
    )
    assert chime_source(False, owner) is None
    assert chime_source(True, owner) == "https://chimes.example.com/ding.mp3"
    assert chime_source("door", owner) == "/srv/chimes/door.wav"
    assert chime_source("bell", owner) == "https://cdn.example.org/bell.ogg"
    listed = "https://media.example.net/x.mp3"
    assert chime_source(listed, owner) == listed
    assert chime_source(True, announce(chimes={"default": "/a.wav"})) == "/a.wav"
    assert chime_source(True, announce()) is None


@pytest.mark.parametrize(
    ("chime", "expected"),
    [
        ("http://127.0.0.1:8123/internal-admin", "the host '127.0.0.1' is not in"),
        ("https://chimes.example.com/other.mp3", "the host 'chimes.example.com' is not in"),
        ("http://media.example.net@169.254.169.254/", "the host '169.254.169.254' is not in"),
        ("file:///etc/passwd", "is neither a named chime (announce.chimes: door) nor a URL"),
        ("/etc/passwd", "is neither a named chime"),
        ("gong", "'gong' is neither a named chime (announce.chimes: door)"),
    ],
)
def test_anything_else_is_refused_with_its_reason(chime: str, expected: str) -> None:
    owner = announce(
        chime_url="https://chimes.example.com/ding.mp3",
        chimes={"door": "/srv/chimes/door.wav"},
        chime_hosts=["media.example.net"],
    )
    with pytest.raises(InvalidRequest, match=r"^invalid announcement: chime: ") as caught:
        chime_source(chime, owner)
    assert expected in str(caught.value)


def test_chime_hosts_are_host_names() -> None:
    assert announce(chime_hosts=[" CDN.example.org. "]).chime_hosts == ["cdn.example.org"]
    for bad in ("http://cdn.example.org", "cdn.example.org:8080", "cdn.example.org/x", ""):
        with pytest.raises(ConfigError, match="chime_hosts"):
            config.load(announce={"chime_hosts": [bad]})


# -- at the edges --------------------------------------------------------------------------------


async def test_an_announcement_naming_an_unlisted_url_fails_and_nothing_is_fetched(
    tmp_path: Path, internal: Internal
) -> None:
    settings = config.load(data_dir=tmp_path / "data")
    announcer = Announcer(settings, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    data = {"message": "x", "media_player": PLAYER, "chime": f"{internal.base}/internal-admin"}
    status = await announcer.announce(data, RequestSource.HOMEASSISTANT)
    assert status.state is AnnouncementState.FAILED
    assert status.code == "invalid"
    assert "not in announce.chime_hosts" in (status.reason or "")
    assert status.as_json()["reason"] == status.reason  # the oyez_announce_failed event's data
    assert sink.delivered == []
    assert internal.hits == []
    await announcer.aclose()


async def test_the_http_api_answers_422_for_an_unlisted_chime(
    tmp_path: Path, internal: Internal
) -> None:
    settings = config.load(
        data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN}
    )
    announcer = Announcer(settings, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    server = OyezServer(settings.http, settings.data_dir, announcer)
    await server.start()
    try:
        body = {"message": "x", "media_player": PLAYER, "chime": f"{internal.base}/admin"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{server.port}/api/v1/announce",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as reply,
        ):
            assert reply.status == 422
            answer = await reply.json()
        assert "chime: the host '127.0.0.1' is not in announce.chime_hosts" in answer["error"]
    finally:
        await server.stop()
        await announcer.aclose()
    assert internal.hits == []
    assert sink.delivered == []


# -- the Home Assistant sink ---------------------------------------------------------------------


def make_sink(tmp_path: Path, **announce_settings: Any) -> MediaPlayerSink:
    settings = config.load(data_dir=tmp_path / "data", announce=announce_settings)
    pipeline = SimpleNamespace(transcoder=Transcoder(settings.audio))
    return MediaPlayerSink(cast(Any, None), cast(Any, pipeline), cast(Any, None), settings.announce)


async def test_the_sink_plays_a_named_local_chime_file(tmp_path: Path) -> None:
    chime = tmp_path / "door.wav"
    chime.write_bytes(tone_wav())
    sink = make_sink(tmp_path, chimes={"door": str(chime)})
    source = sink._chime_url(Announcement(message="x", chime="door"))
    assert source == str(chime)
    pcm = await sink._chime(source)
    assert pcm.data
    with pytest.raises(InvalidRequest, match=r"announce\.chime_hosts"):
        sink._chime_url(Announcement(message="x", chime="http://10.0.0.1/"))
    await sink.aclose()


async def test_a_listed_host_that_redirects_is_not_followed(
    tmp_path: Path, internal: Internal
) -> None:
    sink = make_sink(tmp_path, chime_hosts=["127.0.0.1"])
    with pytest.raises(Exception, match=r"HTTP 302"):
        await sink._chime(f"{internal.base}/redirect")
    assert internal.hits == ["/redirect"]
    await sink.aclose()
