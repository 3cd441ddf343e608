"""Two ``oyez run`` services sharing one engine: a request posted to one is found through the
other, the same message posted to both at once is spoken once, and each part is the shared
kind (books, fire claims, duplicate window, status board, media)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.announce.shared import RedisDuplicateWindow, RedisStatusBoard
from bot.ops import config
from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.providers.redis_ledger import RedisLedger
from bot.schedules.claims import RedisClaims
from bot.schedules.scheduler import Scheduler
from bot.service import Service
from bot.synthesis.flights import RedisFlights
from bot.web.media import SharedMediaStore
from integrations.discord.service import DiscordFrontEnd
from integrations.discord.shared_stores import RedisGuildSettings, RedisPreferences
from tests.support.redis_server import RedisServer, redis_server, redis_url  # noqa: F401
from tests.support.sinks import RecordingSink

TOKEN = "api-token-for-tests-0123"
MESSAGE = "The washing machine has finished."


class Running:
    """One service serving, with a recording speaker sink."""

    def __init__(self, service: Service, sink: RecordingSink, task: asyncio.Task[None]) -> None:
        self.service, self.sink, self.task = service, sink, task

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.service.server.port}/api/v1{path}"


@pytest.fixture
async def pair(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[list[Running]]:
    running: list[Running] = []
    engines: list[Engine] = []
    for _ in range(2):
        engine = await Engine.open(EngineSettings(url=redis_url))
        engines.append(engine)
        settings = config.load(
            data_dir=tmp_path / "data",  # one volume, as in the compose example
            engine={"url": redis_url},
            http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN},
        )
        service = Service(settings, engine=engine)
        sink = RecordingSink()
        service.announcer.add_sink(sink)
        await service.build()
        task = asyncio.create_task(service.serve())
        running.append(Running(service, sink, task))
    while any(r.service.server.port is None for r in running):  # noqa: ASYNC110 - started by serve()
        await asyncio.sleep(0.01)
    yield running
    for r in running:
        r.task.cancel()
        await asyncio.gather(r.task, return_exceptions=True)
    for engine in engines:
        await engine.aclose()


async def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.request(method, url, json=body) as reply,
    ):
        return reply.status, await reply.json()


async def test_every_part_is_the_shared_kind(pair: list[Running]) -> None:
    service = pair[0].service
    assert isinstance(service.pipeline.dispatcher.ledger, RedisLedger)
    assert isinstance(service.announcer.board, RedisStatusBoard)
    assert isinstance(service.announcer.suppression.window, RedisDuplicateWindow)
    assert isinstance(service.server.media, SharedMediaStore)
    assert isinstance(service.pipeline.flights, RedisFlights)
    (scheduler,) = [f for f in service.front_ends if isinstance(f, Scheduler)]
    assert isinstance(scheduler.claims, RedisClaims)


async def test_a_request_posted_to_one_is_found_through_the_other(pair: list[Running]) -> None:
    first, second = pair
    body = {"id": "door-1", "message": MESSAGE, "media_player": "media_player.kitchen"}
    status, answer = await call("POST", first.url("/announce"), body)
    assert status == 202, answer
    for _ in range(200):
        status, found = await call("GET", second.url("/requests/door-1"))
        if status == 200 and found["state"] == "done":
            break
        await asyncio.sleep(0.05)
    assert (status, found["state"], found["message"]) == (200, "done", MESSAGE)
    assert [t["target"] for t in found["targets"]] == ["media_player.kitchen"]
    assert (await call("GET", second.url("/requests/nobody")))[0] == 404


async def test_the_same_message_posted_to_both_at_once_is_spoken_once(
    pair: list[Running],
) -> None:
    target = "media_player.kitchen"
    ids = [f"same-{n}-{k}" for n in range(len(pair)) for k in range(3)]
    posts = [
        call("POST", pair[int(i.split("-")[1])].url("/announce"), {"id": i, "message": MESSAGE,
             "media_player": target})
        for i in ids
    ]  # fmt: skip
    posted = await asyncio.gather(*posts)
    assert all(status == 202 for status, _ in posted)
    states = {}
    for _ in range(200):
        answers = await asyncio.gather(*(call("GET", pair[0].url(f"/requests/{i}")) for i in ids))
        states = {i: found["state"] for i, (_, found) in zip(ids, answers, strict=True)}
        if all(state in ("done", "suppressed") for state in states.values()):
            break
        await asyncio.sleep(0.05)
    assert sorted(states.values()) == ["done"] + ["suppressed"] * 5
    assert sum(len(r.sink.delivered) for r in pair) == 1


async def test_the_discord_bot_keeps_its_users_and_servers_choices_in_the_engine(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    settings = config.load(
        data_dir=tmp_path, discord={"token": "MTAwMA.secret-bot-token"}, http={"port": 0}
    )
    async with await Engine.open(EngineSettings(url=redis_url)) as engine:
        service = Service(settings, engine=engine)
        await service.build()
        try:
            (discord,) = [f for f in service.front_ends if isinstance(f, DiscordFrontEnd)]
            assert isinstance(discord.bot.preferences, RedisPreferences)
            assert isinstance(discord.bot.guild_settings, RedisGuildSettings)
        finally:
            for front_end in reversed(service.front_ends):
                await front_end.stop()
            await service.pipeline.aclose()


async def test_with_the_engine_down_an_announcement_is_still_spoken(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811 - for its binary: the test stops a server of its own
) -> None:
    (tmp_path / "redis").mkdir()
    own = RedisServer(redis_server.binary, tmp_path / "redis")
    own.start()
    settings = config.load(
        data_dir=tmp_path / "data",
        engine={"url": own.url},
        http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN},
    )
    try:
        async with await Engine.open(settings.engine) as engine:
            service = Service(settings, engine=engine)
            sink = RecordingSink()
            service.announcer.add_sink(sink)
            await service.build()
            serving = asyncio.create_task(service.serve())
            try:
                while service.server.port is None:  # noqa: ASYNC110 - started by serve()
                    await asyncio.sleep(0.01)
                running = Running(service, sink, serving)
                own.stop()  # the engine goes away
                body = {"id": "down-1", "message": MESSAGE, "media_player": "media_player.kitchen"}
                status, _ = await call("POST", running.url("/announce"), body)
                assert status == 202
                await asyncio.wait_for(sink.arrived.wait(), 10)
                for _ in range(100):
                    status, found = await call("GET", running.url("/requests/down-1"))
                    if found.get("state") == "done":
                        break
                    await asyncio.sleep(0.05)
                assert found["state"] == "done"  # spoken: maybe twice, never lost
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
    finally:
        own.stop()
