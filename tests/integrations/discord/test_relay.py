"""Relayed Discord deliveries on a real Redis: a dead gateway's jobs are taken over, a live one
keeps its long ones, and a job whose asker gave up is answered expired, never spoken late.

The gateway side speaks through a stand-in ``speak`` (what :meth:`DiscordSink.speak_here` is
in a gateway process) that records each call; the real bot is in test_shards.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.announce.model import TargetResult
from bot.ops.config import DiscordChannel, EngineSettings
from bot.ops.engine import Engine
from bot.speech import SpeechRequest, Utterance
from integrations.discord.relay import GROUP, DeliveryWorker, RelayedDiscordSink, stream_of
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

PREFIX = "oyez:"
SHARDS = 2
TAKEOVER_S = 0.6
#: A guild of shard 1.
GUILD = (1 << 22) | 7
TARGET = DiscordChannel(guild_id=GUILD, channel_id=GUILD + 2)


@pytest.fixture
async def clients(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[list[Engine]]:
    """Three connections to one server: the asker, then two gateway processes."""
    opened = [await Engine.open(EngineSettings(url=redis_url)) for _ in range(3)]
    yield opened
    for engine in opened:
        await engine.aclose()


class Speaker:
    """Stands in for a gateway's bot: each request takes ``seconds`` to speak."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.spoken: list[str] = []
        self.started: list[str] = []

    async def speak(
        self, target: DiscordChannel, request: SpeechRequest
    ) -> tuple[TargetResult, Utterance | None]:
        self.started.append(request.text)
        await asyncio.sleep(self.seconds)
        self.spoken.append(request.text)
        return TargetResult(str(target), True, duration_s=self.seconds), None


async def _ready() -> None:
    return None


def _sink(engine: Engine, timeout_s: float = 30.0) -> RelayedDiscordSink:
    assert engine.client is not None
    return RelayedDiscordSink(
        engine.client,
        PREFIX,
        SHARDS,
        None,  # type: ignore[arg-type]  # warm() is not used here
        timeout_s=timeout_s,
        takeover_s=TAKEOVER_S,
    )


def _worker(engine: Engine, speaker: Speaker) -> DeliveryWorker:
    assert engine.client is not None
    return DeliveryWorker(engine.client, PREFIX, [1], speaker.speak, _ready, takeover_s=TAKEOVER_S)


async def _served(worker: DeliveryWorker) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.serve())
    await asyncio.sleep(0.05)
    return task


async def until(count: Callable[[], Awaitable[int]], wanted: int, timeout_s: float = 10) -> None:
    """Return once ``count()`` is ``wanted`` (what a fixed sleep guessed wrong on a loaded
    machine: 1 of 5 jobs asked after 0.1 s)."""
    async with asyncio.timeout(timeout_s):
        while await count() != wanted:  # noqa: ASYNC110 (polling Redis)
            await asyncio.sleep(0.01)


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_jobs_a_dead_gateway_had_read_are_taken_over(clients: list[Engine]) -> None:
    asker, dead, alive = clients
    assert dead.client is not None
    stream = stream_of(PREFIX, 1)
    await dead.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    asking = [
        asyncio.create_task(_sink(asker).relay(TARGET, SpeechRequest(text=f"job {n}")))
        for n in range(5)
    ]
    redis = dead.client
    await until(lambda: redis.xlen(stream), 5)  # all asked (slow under a full run)
    # the dead process read them all and never answered (killed)
    read: Any = await dead.client.xreadgroup(GROUP, "dead-process", {stream: ">"}, count=10)
    assert len(read[0][1]) == 5
    speaker = Speaker()
    worker = _worker(alive, speaker)
    serving = await _served(worker)
    try:
        results = await asyncio.wait_for(asyncio.gather(*asking), 10)
        await asyncio.sleep(TAKEOVER_S * 2 + TAKEOVER_S / 3 + 0.2)  # the dead one forgotten
        consumers: Any = await alive.client.xinfo_consumers(stream, GROUP)  # type: ignore[union-attr]
    finally:
        await _stop(serving)
    assert [c["name"] for c in consumers] == [worker.consumer]
    assert all(r.ok for r in results), results
    assert sorted(speaker.spoken) == [f"job {n}" for n in range(5)]  # each once
    assert worker.taken_over == 5
    assert await alive.client.xpending(stream, GROUP) == {  # type: ignore[union-attr]
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_a_worker_stops_even_when_redis_swallows_its_cancellation(
    clients: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py may lose a cancellation that lands on a blocking XREADGROUP
    (redis/redis-py#2028); the worker must stop all the same, or a shutdown waits forever."""
    _, gateway, _ = clients
    assert gateway.client is not None
    real = gateway.client.xreadgroup
    swallowed: list[bool] = []

    async def swallowing(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real(*args, **kwargs)
        except asyncio.CancelledError:
            swallowed.append(True)
            return []

    monkeypatch.setattr(gateway.client, "xreadgroup", swallowing)
    serving = await _served(_worker(gateway, Speaker()))
    await asyncio.sleep(0.2)  # reading, blocked for BLOCK_S
    serving.cancel()
    done, _ = await asyncio.wait([serving], timeout=5)  # not awaited: it would wait for ever
    assert done, "the worker went on reading after it was cancelled"
    assert serving.cancelled()
    assert swallowed == [True]


async def test_a_live_gateway_keeps_its_long_delivery(clients: list[Engine]) -> None:
    asker, first, second = clients
    slow, other = Speaker(seconds=TAKEOVER_S * 4), Speaker()
    serving = [await _served(_worker(first, slow))]
    asking = asyncio.create_task(_sink(asker).relay(TARGET, SpeechRequest(text="a long one")))
    async with asyncio.timeout(10):
        while not slow.started:  # noqa: ASYNC110 (a plain list)
            await asyncio.sleep(0.01)
    assert slow.started == ["a long one"]
    second_worker = _worker(second, other)  # claims every TAKEOVER_S / 3
    serving.append(await _served(second_worker))
    try:
        result = await asyncio.wait_for(asking, 10)
    finally:
        await _stop(*serving)
    assert result.ok
    assert other.started == []  # never taken over: the first kept claiming it
    assert second_worker.taken_over == 0


async def test_a_job_whose_asker_gave_up_is_answered_expired_not_spoken(
    clients: list[Engine],
) -> None:
    asker, gateway, _ = clients
    assert gateway.client is not None
    await gateway.client.xgroup_create(stream_of(PREFIX, 1), GROUP, id="0", mkstream=True)
    # no gateway process reads the shard for longer than the asker waits
    result = await _sink(asker, timeout_s=0.3).relay(TARGET, SpeechRequest(text="too late"))
    assert not result.ok
    assert result.error == "no gateway process of shard 1 spoke it within 0.3 s"
    speaker = Speaker()
    worker = _worker(gateway, speaker)
    serving = await _served(worker)
    try:
        reply: list[Any] = []
        for _ in range(100):
            keys = await gateway.client.keys(f"{PREFIX}discord:delivery:*")
            if keys:
                reply = await gateway.client.lrange(keys[0], 0, -1)
                break
            await asyncio.sleep(0.02)
    finally:
        await _stop(serving)
    assert speaker.started == []
    assert len(reply) == 1
    assert '"expired": true' in reply[0]


async def test_the_request_expires_with_the_asker_or_sooner(clients: list[Engine]) -> None:
    """The job's request carries the asker's deadline (its own ``expires_at`` if sooner),
    which the gateway's player enforces too."""
    asker, gateway, _ = clients
    seen: list[SpeechRequest] = []

    async def speak(
        target: DiscordChannel, request: SpeechRequest
    ) -> tuple[TargetResult, Utterance | None]:
        seen.append(request)
        return TargetResult(str(target), True), None

    assert gateway.client is not None
    worker = DeliveryWorker(gateway.client, PREFIX, [1], speak, _ready, takeover_s=TAKEOVER_S)
    serving = await _served(worker)
    soon = datetime.now(UTC) + timedelta(seconds=5)
    try:
        sink = _sink(asker, timeout_s=30)
        await sink.relay(TARGET, SpeechRequest(text="a"))
        await sink.relay(TARGET, SpeechRequest(text="b", expires_at=soon))
    finally:
        await _stop(serving)
    first, second = seen
    assert first.expires_at is not None
    assert 25 < (first.expires_at - datetime.now(UTC)).total_seconds() <= 30
    assert second.expires_at == soon


async def test_an_asker_waits_past_its_deadline_for_a_delivery_that_started_before_it(
    clients: list[Engine],
) -> None:
    asker, gateway, _ = clients
    speaker = Speaker(seconds=1.5)  # started at once, ends a second after the deadline
    serving = await _served(_worker(gateway, speaker))
    try:
        result = await _sink(asker, timeout_s=0.5).relay(TARGET, SpeechRequest(text="long"))
    finally:
        await _stop(serving)
    assert result.ok, result
    assert speaker.spoken == ["long"]


async def test_a_hundred_targets_at_once_are_answered_over_one_reading_connection(
    clients: list[Engine],
) -> None:
    """The asker reads every answer it waits for with one BLPOP over all their lists, so an
    announcement to many channels does not take a pooled connection per channel."""
    asker, gateway, _ = clients
    speaker = Speaker(seconds=0.5)
    serving = await _served(_worker(gateway, speaker))
    sink = _sink(asker)
    targets = [DiscordChannel(guild_id=GUILD + 2 * n, channel_id=n + 1) for n in range(100)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(sink.relay(t, SpeechRequest(text=str(t))) for t in targets)), 20
        )
    finally:
        await _stop(serving)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert sorted(r.target for r in results) == sorted(str(t) for t in targets)
    assert sink._answers._reader is None  # stopped: nothing is awaited any more


async def test_a_dead_gateways_job_taken_over_after_its_asker_gave_up_is_not_spoken(
    clients: list[Engine],
) -> None:
    asker, dead, alive = clients
    assert dead.client is not None
    stream = stream_of(PREFIX, 1)
    await dead.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    asking = asyncio.create_task(
        _sink(asker, timeout_s=0.5).relay(TARGET, SpeechRequest(text="said too late"))
    )
    await asyncio.sleep(0.1)
    await dead.client.xreadgroup(GROUP, "dead-process", {stream: ">"}, count=1)  # then killed
    result = await asyncio.wait_for(asking, 10)  # its holder idle past the takeover time
    assert (result.ok, result.error) == (
        False,
        "no gateway process of shard 1 spoke it within 0.5 s",
    )
    speaker = Speaker()
    worker = _worker(alive, speaker)
    serving = await _served(worker)  # the restarted process
    try:
        for _ in range(100):
            if worker.taken_over and not worker._held[stream]:
                break
            await asyncio.sleep(0.02)
    finally:
        await _stop(serving)
    assert worker.taken_over == 1
    assert speaker.started == []  # answered expired, never spoken
