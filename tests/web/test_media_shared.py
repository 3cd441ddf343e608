"""Media URLs any process serves: the expiry is in the name, the files on a shared folder."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.ops import config
from bot.web.media import PART_KEPT_S, SharedMediaStore
from bot.web.server import OyezServer

AUDIO = bytes(range(256)) * 40


class Wall:
    """Unix seconds from now on, moved by the test (file times are real ones)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[OyezServer, OyezServer, Wall]]:
    """Two processes' servers on one data folder."""
    clock = Wall()
    servers = []
    for _ in range(2):
        settings = config.load(data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0})
        http = settings.http
        store = SharedMediaStore(
            settings.data_dir / "media", http.base_url(), http.media_ttl_s, clock=clock
        )
        server = OyezServer(http, settings.data_dir, media=store)
        await server.start()
        servers.append(server)
    yield servers[0], servers[1], clock
    for server in servers:
        await server.stop()


async def fetch(server: OyezServer, url: str, **kwargs: str) -> tuple[int, bytes]:
    name = url.rsplit("/", 1)[-1]
    local = f"http://127.0.0.1:{server.port}/media/{name}"
    async with aiohttp.ClientSession() as session, session.get(local, headers=kwargs) as reply:
        return reply.status, await reply.read()


async def test_a_url_one_process_published_is_served_by_another_until_it_expires(
    two: tuple[OyezServer, OyezServer, Wall],
) -> None:
    first, second, clock = two
    url = first.media.publish(AUDIO, "mp3", ttl_s=60)
    # on disk before the URL is handed out: any process may be asked at once
    assert (first.media.directory / url.rsplit("/", 1)[-1]).read_bytes() == AUDIO
    assert await fetch(second, url) == (200, AUDIO)
    assert await fetch(second, url, Range="bytes=0-9") == (206, AUDIO[:10])
    clock.now += 61
    assert (await fetch(first, url))[0] == 404
    assert not list(first.media.directory.glob("*.mp3"))  # removed on the way


async def test_growing_media_streams_from_its_maker_and_is_served_by_any_once_whole(
    two: tuple[OyezServer, OyezServer, Wall],
) -> None:
    first, second, _ = two
    url, media = first.media.publish_growing("mp3", ttl_s=60)
    media.append(AUDIO[:1000])
    assert (await fetch(second, url))[0] == 404  # not whole yet: only its maker has it
    async with aiohttp.ClientSession() as session:
        local = f"http://127.0.0.1:{first.port}/media/{url.rsplit('/', 1)[-1]}"
        async with session.get(local) as reply:
            assert "Content-Length" not in reply.headers  # streamed as it is made
            head = await reply.content.read(1000)
            media.append(AUDIO[1000:])
            media.finish()
            assert head + await reply.read() == AUDIO
    assert await fetch(second, url) == (200, AUDIO)
    empty_url, empty = first.media.publish_growing("mp3")
    empty.finish()
    assert (await fetch(first, empty_url))[0] == 404  # nothing made: nothing to serve


async def test_an_edited_expiry_or_token_names_no_media(
    two: tuple[OyezServer, OyezServer, Wall],
) -> None:
    first, second, _ = two
    url = first.media.publish(AUDIO, "mp3", ttl_s=60)
    token, _, rest = url.rsplit("/", 1)[-1].rpartition("-")  # the token may hold "-" too
    later = f"{token}-{int(rest.split('.')[0], 16) + 86400:x}.mp3"
    assert (await fetch(second, later))[0] == 404
    assert (await fetch(second, f"{'A' * 22}-{rest}"))[0] == 404
    assert (await fetch(second, "../oyez.sqlite3"))[0] == 404


def test_a_process_starting_keeps_the_others_media_and_sweeps_only_expired(
    tmp_path: Path,
) -> None:
    clock = Wall()
    folder = tmp_path / "media"
    first = SharedMediaStore(folder, "http://a:8080", 600, clock=clock)
    short = first.publish(AUDIO, "wav", ttl_s=10)
    long = first.publish(AUDIO, "mp3", ttl_s=600)
    stale_part = folder / "half-written.part"
    stale_part.write_bytes(b"x")
    second = SharedMediaStore(folder, "http://b:8080", 600, clock=clock)
    names = {p.name for p in folder.iterdir()}
    assert {short.rsplit("/", 1)[-1], long.rsplit("/", 1)[-1]} <= names
    clock.now += 11
    assert second.sweep() == 1
    assert second.path(long.rsplit("/", 1)[-1]) is not None
    clock.now = stale_part.stat().st_mtime + PART_KEPT_S + 1
    assert second.sweep() == 2  # the long one has expired by then too, and the .part is old
    assert not list(folder.iterdir())
