"""Oyez's HTTP server on 127.0.0.1: media at unguessable, expiring URLs with Range support, and
the announcement API behind its bearer token."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.announce.announcer import Announcer
from bot.ops import config
from bot.web import server as server_module
from bot.web.server import MAX_BODY, MediaStore, OyezServer, is_loopback_url
from tests.support.clock import NOON, FakeClock
from tests.support.sinks import RecordingSink

TOKEN = "api-token-for-tests-0123"
AUDIO = bytes(range(256)) * 40  # 10,240 bytes


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[OyezServer, RecordingSink]]:
    settings = config.load(
        data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN}
    )
    announcer = Announcer(settings, clock=FakeClock(NOON))
    sink = RecordingSink()
    announcer.add_sink(sink)
    server = OyezServer(settings.http, settings.data_dir, announcer)
    await server.start()
    yield server, sink
    await server.stop()
    await announcer.aclose()


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as reply:
        return reply.status, dict(reply.headers), await reply.read()


# -- media ---------------------------------------------------------------------------------------


async def test_a_whole_file_is_answered_from_memory_while_it_is_among_the_last_published(
    served: tuple[OyezServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    monkeypatch.setattr(server_module, "KEPT_IN_MEMORY_BYTES", len(AUDIO) + 1)
    older = server.media.publish(AUDIO, "mp3")
    newer = server.media.publish(AUDIO[::-1], "mp3")  # the older one leaves memory: to its file
    await server.media.settle()
    older_path, newer_path = (server.media.path(u.rsplit("/", 1)[1]) for u in (older, newer))
    assert older_path is not None and newer_path is not None
    assert older_path.read_bytes() == AUDIO
    assert not newer_path.exists()  # in memory only
    older_path.write_bytes(b"\x00" * len(AUDIO))  # what is on disk changes behind its back
    assert (await get(older))[2] == b"\x00" * len(AUDIO)  # the file
    assert server.media.audio(older_path.name) == b"\x00" * len(AUDIO)
    assert server.media.audio(newer_path.name) == AUDIO[::-1]
    assert server.media.audio("AAAAAAAAAAAAAAAAAAAAAA.mp3") is None
    status, headers, body = await get(newer, headers={"Range": "bytes=0-"})
    assert (status, body) == (200, AUDIO[::-1])  # from memory
    assert (headers["Accept-Ranges"], int(headers["Content-Length"])) == ("bytes", len(AUDIO))
    status, headers, body = await get(newer, headers={"Range": "bytes=0-9"})
    assert (status, body) == (206, AUDIO[::-1][:10])  # a Range is the file's: written for it
    assert newer_path.read_bytes() == AUDIO[::-1]
    async with aiohttp.ClientSession() as session, session.head(newer) as reply:
        assert (reply.status, reply.headers["Content-Length"]) == (200, str(len(AUDIO)))


async def test_a_file_leaving_memory_is_written_off_the_event_loop_and_served_meanwhile(
    served: tuple[OyezServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    monkeypatch.setattr(server_module, "KEPT_IN_MEMORY_BYTES", len(AUDIO) + 1)
    writing, may_finish = threading.Event(), threading.Event()
    writer_threads: list[str] = []
    write_file = server_module._write_file

    def slow_disk(path: Path, audio: bytes) -> None:
        writer_threads.append(threading.current_thread().name)
        writing.set()
        may_finish.wait(10)
        write_file(path, audio)

    monkeypatch.setattr(server_module, "_write_file", slow_disk)
    url = server.media.publish(AUDIO, "mp3")
    server.media.publish(AUDIO[::-1], "mp3")  # returns while the first is still being written
    path = server.media.path(url.rsplit("/", 1)[1])
    assert path is not None
    assert await asyncio.to_thread(writing.wait, 10)
    assert not path.exists()
    status, headers, body = await get(url)  # the loop answers meanwhile, from memory
    assert (status, body, headers["Accept-Ranges"]) == (200, AUDIO, "bytes")
    ranged = asyncio.ensure_future(get(url, headers={"Range": "bytes=10-19"}))
    await asyncio.sleep(0.05)
    assert not ranged.done()  # a Range is the file's to answer: it waits for it
    may_finish.set()
    assert (await ranged)[0::2] == (206, AUDIO[10:20])
    await server.media.settle()
    assert path.read_bytes() == AUDIO
    assert writer_threads and threading.main_thread().name not in writer_threads


async def test_a_file_that_expires_or_cannot_be_written_as_it_leaves_memory_is_gone(
    served: tuple[OyezServer, RecordingSink],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = served
    monkeypatch.setattr(server_module, "KEPT_IN_MEMORY_BYTES", len(AUDIO) + 1)
    clock = Monotonic()
    server.media.clock = clock
    may_finish = threading.Event()
    write_file = server_module._write_file

    def slow_disk(path: Path, audio: bytes) -> None:
        may_finish.wait(10)
        write_file(path, audio)

    monkeypatch.setattr(server_module, "_write_file", slow_disk)
    url = server.media.publish(AUDIO, "mp3", ttl_s=5)
    name = url.rsplit("/", 1)[1]
    server.media.publish(AUDIO, "mp3")  # the first leaves memory: its write begins
    clock.now += 6
    assert (await get(url))[0] == 404  # expired while it was being written
    may_finish.set()
    await server.media.settle()
    assert not (server.media.directory / name).exists()  # not left behind by the late write

    def full_disk(path: Path, audio: bytes) -> None:  # noqa: ARG001 - _write_file's shape
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server_module, "_write_file", full_disk)
    url = server.media.publish(AUDIO, "mp3")
    assert (await get(url))[0::2] == (200, AUDIO)  # from memory: no disk needed
    server.media.publish(AUDIO, "mp3")  # it leaves memory: the disk refuses it
    await server.media.settle()
    assert "could not be written" in caplog.text and "No space left" in caplog.text
    assert (await get(url))[0] == 404


async def test_media_is_served_whole_and_in_ranges(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, _ = served
    url = server.media.publish(AUDIO, "mp3")
    assert url.startswith(f"http://127.0.0.1:{server.port}/media/")
    status, headers, body = await get(url)
    assert status == 200
    assert headers["Content-Type"] == "audio/mpeg"
    assert int(headers["Content-Length"]) == len(AUDIO)
    assert headers["Accept-Ranges"] == "bytes"
    assert body == AUDIO

    status, headers, body = await get(url, headers={"Range": "bytes=100-199"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 100-199/{len(AUDIO)}"
    assert body == AUDIO[100:200]
    status, _, body = await get(url, headers={"Range": "bytes=-16"})
    assert status == 206
    assert body == AUDIO[-16:]
    status, headers, _ = await get(url, headers={"Range": f"bytes={len(AUDIO) + 10}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(AUDIO)}"

    wav = server.media.publish(b"RIFF....WAVE", "wav")
    assert (await get(wav))[1]["Content-Type"] == "audio/wav"


async def test_media_urls_are_unguessable_and_expire(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, _ = served
    clock = Monotonic()
    server.media.clock = clock
    urls = {server.media.publish(AUDIO, "mp3") for _ in range(50)}
    assert len(urls) == 50
    name = next(iter(urls)).rsplit("/", 1)[-1]
    assert len(name.removesuffix(".mp3")) >= 22  # 128 bits in base64url
    url = server.media.publish(AUDIO, "mp3", ttl_s=60)
    assert (await get(url))[0] == 200
    clock.now += 59
    assert (await get(url))[0] == 200
    clock.now += 1
    status, _, body = await get(url)
    assert status == 404
    assert b"expired" in body
    assert not (server.media.directory / url.rsplit("/", 1)[-1]).exists()
    base = url.rsplit("/", 1)[0]
    assert (await get(f"{base}/AAAAAAAAAAAAAAAAAAAAAA.mp3"))[0] == 404
    assert (await get(f"{base}/..%2Fsecret.mp3"))[0] == 404


async def test_growing_media_is_sent_as_it_is_made_and_whole_once_made(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, _ = served
    url, media = server.media.publish_growing("mp3")
    media.append(AUDIO[:1000])
    arrived: list[bytes] = []
    # what players send for the whole file: answered as it is made too
    whole = asyncio.create_task(get(url, headers={"Range": "bytes=0-"}))
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "audio/mpeg"
        assert "Content-Length" not in reply.headers  # chunked: its length is not known yet
        assert reply.headers["Transfer-Encoding"] == "chunked"
        arrived.append(await reply.content.read(1000))  # the first part, before the rest exists
        ranged = asyncio.create_task(get(url, headers={"Range": "bytes=0-9"}))
        await asyncio.sleep(0.1)
        assert not ranged.done()  # a Range request waits for the whole file
        media.append(AUDIO[1000:])
        media.finish()
        arrived.append(await reply.read())
    assert b"".join(arrived) == AUDIO
    status, headers, body = await whole
    assert (status, "Content-Length" in headers, body) == (200, False, AUDIO)
    status, headers, body = await ranged
    assert (status, headers["Content-Range"], body) == (206, f"bytes 0-9/{len(AUDIO)}", AUDIO[:10])
    status, headers, body = await get(url)  # made: a file like any other
    assert (status, int(headers["Content-Length"]), body) == (200, len(AUDIO), AUDIO)


async def test_a_player_that_leaves_a_growing_media_early_is_no_error(
    served: tuple[OyezServer, RecordingSink], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    url, media = server.media.publish_growing("mp3")
    media.append(AUDIO[:1000])
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert await reply.content.read(1000) == AUDIO[:1000]
    for _ in range(5):  # the rest is made after the player has gone
        media.append(AUDIO[1000:2000])
        await asyncio.sleep(0.02)
    media.finish()
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (await get(url))[0] == 200


async def test_growing_media_that_fails_before_any_audio_answers_503(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, _ = served
    url, media = server.media.publish_growing("mp3")
    fetching = asyncio.create_task(get(url))
    await asyncio.sleep(0.1)
    media.fail("every provider failed")
    status, _, body = await fetching
    assert status == 503
    assert b"every provider failed" in body
    with pytest.raises(ValueError, match="unsupported media extension"):
        server.media.publish_growing("exe")


def test_sweep_removes_expired_files_and_a_restart_forgets_old_ones(tmp_path: Path) -> None:
    clock = Monotonic()
    store = MediaStore(tmp_path / "media", "http://oyez.lan:8080/", 600, clock=clock)
    short = store.publish(AUDIO, "mp3", ttl_s=10)
    long = store.publish(AUDIO, "mp3")
    assert long.startswith("http://oyez.lan:8080/media/")
    clock.now += 11
    assert store.sweep() == 1
    assert store.path(short.rsplit("/", 1)[-1]) is None
    assert store.path(long.rsplit("/", 1)[-1]) is not None
    assert len(list((tmp_path / "media").iterdir())) == 1
    MediaStore(tmp_path / "media", "http://oyez.lan:8080")  # a new run: old URLs are gone
    assert list((tmp_path / "media").iterdir()) == []
    with pytest.raises(ValueError, match="unsupported media extension"):
        store.publish(AUDIO, "exe")


def test_loopback_urls() -> None:
    assert is_loopback_url("http://127.0.0.1:8080")
    assert is_loopback_url("http://localhost:8080/x")
    assert is_loopback_url("http://[::1]:8123")
    assert not is_loopback_url("http://192.168.1.20:8080")
    assert not is_loopback_url("https://homeassistant.local:8123")


# -- API -----------------------------------------------------------------------------------------


async def test_announce_needs_the_token_then_accepts_and_reports(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, sink = served
    api = f"http://127.0.0.1:{server.port}/api/v1"
    body = {"message": "The bins go out tonight.", "media_player": "media_player.hall"}
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
            async with session.post(f"{api}/announce", json=body, headers=headers) as reply:
                assert reply.status == 401
                assert (await reply.json())["error"] == "missing or wrong bearer token"
        async with session.get(f"{api}/requests/x") as reply:
            assert reply.status == 401
        assert sink.delivered == []

        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with session.post(f"{api}/announce", json=body, headers=auth) as reply:
            assert reply.status == 202
            accepted = await reply.json()
        request_id = accepted["request_id"]
        assert accepted["state"] == "queued"
        assert reply.headers["Location"] == f"/api/v1/requests/{request_id}"
        await server.announcer.status(request_id).done.wait()  # type: ignore[union-attr]
        async with session.get(f"{api}/requests/{request_id}", headers=auth) as reply:
            assert reply.status == 200
            status = await reply.json()
        assert status["state"] == "done"
        assert status["source"] == "http"
        assert status["targets"][0]["target"] == "media_player.hall"
        assert sink.delivered[0][1].requester == "http"

        async with session.get(f"{api}/requests/unknown", headers=auth) as reply:
            assert reply.status == 404


async def test_invalid_bodies_are_refused_with_their_reason(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, sink = served
    api = f"http://127.0.0.1:{server.port}/api/v1"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.post(f"{api}/announce", json={"volume": 2, "id": "v1"}) as reply:
            assert reply.status == 422
            answer = await reply.json()
        assert answer["request_id"] == "v1"
        assert "message: required" in answer["error"]
        assert "volume:" in answer["error"]
        async with session.get(f"{api}/requests/v1") as reply:
            assert (await reply.json())["code"] == "invalid"
        async with session.post(f"{api}/announce", data=b"{not json") as reply:
            assert reply.status == 400
            assert (await reply.json())["error"] == "the body is not valid JSON"
        too_big = {"message": "x" * (MAX_BODY + 10), "media_player": "media_player.hall"}
        async with session.post(f"{api}/announce", json=too_big) as reply:
            assert reply.status == 413
    await asyncio.sleep(0)
    assert sink.delivered == []


async def test_without_a_token_the_api_is_off(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0})
    announcer = Announcer(settings)
    server = OyezServer(settings.http, settings.data_dir, announcer)
    await server.start()
    try:
        assert not server.api_enabled
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{server.port}/api/v1/announce",
                json={"message": "hi"},
                headers={"Authorization": "Bearer anything"},
            ) as reply,
        ):
            assert reply.status == 404
            assert "the API is off" in (await reply.json())["error"]
        url = server.media.publish(AUDIO, "mp3")  # media is served all the same
        assert (await get(url))[0] == 200
    finally:
        await server.stop()


# -- bad input: a 4xx naming what is wrong, always {"error": ...}, never a 500 ----------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "application/json", 400, "nested too deeply"),
        (b'{"message": "x"}', "application/json; charset=bogus-8", 400, "unknown charset"),
        (b'{"message": "\xff\xfe"}', "application/json; charset=utf-8", 400, "not valid utf-8"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"x" * (MAX_BODY + 10), "application/json", 413, "Request Entity Too Large"),
    ],
)
async def test_bad_bodies_get_a_json_4xx_naming_the_problem(
    served: tuple[OyezServer, RecordingSink],
    body: bytes,
    content_type: str,
    status: int,
    reason: str,
) -> None:
    server, sink = served
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/api/v1/announce"
        async with session.post(url, data=body, headers=headers) as reply:
            assert reply.status == status
            assert reply.content_type == "application/json"
            assert reason in (await reply.json())["error"]
    assert sink.delivered == []


async def test_a_token_that_is_not_text_is_a_401(
    served: tuple[OyezServer, RecordingSink],
) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /api/v1/requests/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert b"application/json" in head
    assert b"bearer token" in body


async def test_aiohttps_own_errors_are_json_too(
    served: tuple[OyezServer, RecordingSink], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/no/such/route") as reply:
            assert (reply.status, reply.content_type) == (404, "application/json")
            assert (await reply.json())["error"] == "Not Found"
        async with session.put(f"{base}/api/v1/announce") as reply:
            assert (reply.status, reply.content_type) == (405, "application/json")
            assert "POST" in reply.headers["Allow"]
    # bad input is not our bug: no traceback, nothing at ERROR
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_our_own_bug_is_a_json_500_with_its_traceback_logged(
    served: tuple[OyezServer, RecordingSink],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = served
    assert server.announcer is not None

    def broken(request_id: str) -> None:
        raise RuntimeError(f"a bug of ours ({request_id})")

    monkeypatch.setattr(server.announcer, "status", broken)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{server.port}/api/v1/requests/x"
    async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as reply:
        assert (reply.status, reply.content_type) == (500, "application/json")
        assert "bug" not in (await reply.json())["error"]  # details stay in the log
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None and "a bug of ours" in str(logged.exc_info[1])


async def test_a_running_request_is_found_after_1001_invalid_posts(tmp_path: Path) -> None:
    settings = config.load(
        data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN}
    )
    release = asyncio.Event()

    async def slow(request: object) -> None:  # noqa: ARG001 - the announcer's prepare signature
        await release.wait()

    announcer = Announcer(settings, slow, clock=FakeClock(NOON))
    announcer.add_sink(RecordingSink())
    server = OyezServer(settings.http, settings.data_dir, announcer)
    await server.start()
    base = f"http://127.0.0.1:{server.port}/api/v1"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            slow_one = {"message": "hi", "media_player": "media_player.a", "id": "slow-one"}
            async with http.post(f"{base}/announce", json=slow_one) as response:
                assert response.status == 202
            for _ in range(1001):
                async with http.post(f"{base}/announce", json={"message": "hi", "ttl": 0}) as bad:
                    assert bad.status == 422
            async with http.get(f"{base}/requests/slow-one") as response:
                assert response.status == 200
                assert (await response.json())["state"] == "queued"
            release.set()
            await announcer.status("slow-one").done.wait()  # type: ignore[union-attr]
            async with http.get(f"{base}/requests/slow-one") as response:
                assert (await response.json())["state"] == "done"
    finally:
        await server.stop()
        await announcer.aclose()
