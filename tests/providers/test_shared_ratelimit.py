"""The rate limiter several processes share through Redis: three limiters, each with its own
connection (as three processes have), against one real server, in real time with short
windows."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.ops import config
from bot.ops.engine import Engine
from bot.providers.base import ProviderRegistry
from bot.providers.dispatch import Dispatcher
from bot.providers.ratelimit import RateLimiter, WaitExpired
from bot.providers.shared_ratelimit import SharedRateLimiter
from bot.speech import SpeechRequest, Voice
from bot.synthesis.pipeline import SpeechPipeline
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.support.homeassistant import free_port
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

WINDOW_S, LIMIT, AT_ONCE = 0.5, 5, 2


@dataclass
class Cluster:
    limiters: list[SharedRateLimiter]
    clients: list[Redis]
    grants: list[int] = field(default_factory=list)  # server ms of each grant
    in_flight: int = 0
    most_in_flight: int = 0

    async def call(self, limiter: SharedRateLimiter, hold_s: float = 0.05) -> None:
        granted = await limiter.acquire()
        self.grants.append(limiter.server_grants[granted])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(hold_s)
        finally:
            self.in_flight -= 1
            limiter.release()
        limiter.succeeded(granted=granted)

    async def phase_ms(self) -> int:
        return int(await self.clients[0].hget(self.limiters[0].key, "phase") or 0)

    async def per_window(self) -> list[int]:
        phase = await self.phase_ms()
        windows = [math.floor((g - phase) / (WINDOW_S * 1000)) for g in self.grants]
        return [windows.count(k) for k in range(min(windows), max(windows) + 1)]


@pytest.fixture
async def cluster(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[Cluster]:
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    limiters = [
        SharedRateLimiter(
            "segmind", client, requests_per_minute=LIMIT, max_concurrent=AT_ONCE,
            window_s=WINDOW_S, lease_s=0.6,
        )
        for client in clients
    ]  # fmt: skip
    yield Cluster(limiters, clients)
    await asyncio.sleep(0.05)  # the last lease drops
    for client in clients:
        await client.aclose()


async def test_three_processes_share_one_window_and_one_set_of_slots(cluster: Cluster) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(cluster.call(cluster.limiters[n % 3]) for n in range(30)))
    took = loop.time() - started
    assert max(await cluster.per_window()) <= LIMIT
    assert cluster.most_in_flight <= AT_ONCE
    assert len(cluster.grants) == 30
    # 30 calls at 5 a window need 6 windows: the last starts in the sixth
    assert 5 * WINDOW_S <= took <= 10 * WINDOW_S  # the upper bound leaves room for load


async def test_a_429_in_one_process_pauses_every_process(cluster: Cluster) -> None:
    first, second, _ = cluster.limiters
    await cluster.call(first)
    loop = asyncio.get_running_loop()
    first.pause(0.8)
    await asyncio.sleep(0.05)  # the pause reaches the server
    asked = loop.time()
    await cluster.call(second)
    assert loop.time() - asked >= 0.7


async def test_the_limit_one_process_learns_from_a_429_holds_for_all(cluster: Cluster) -> None:
    first, second, third = cluster.limiters
    await asyncio.gather(*(cluster.call(limiter) for limiter in (first, second, third)))
    granted = await first.acquire()  # a fourth call, which the provider refuses
    first.release()
    first.pause(0.3, refused=granted)
    await asyncio.sleep(0.05)
    assert await cluster.clients[0].hget(first.key, "learned") == "3"
    cluster.grants.clear()
    await asyncio.gather(*(cluster.call(cluster.limiters[n % 3]) for n in range(9)))
    counts = await cluster.per_window()
    # the first window after the pause holds to it; then it is probed up (4, 6, ...)
    assert counts[0] <= 3 and max(counts) <= 4


async def test_a_slot_whose_process_died_frees_when_its_lease_runs_out(cluster: Cluster) -> None:
    dead, alive, _ = cluster.limiters
    await dead.acquire()
    await dead.acquire()  # both slots, then the process dies: no release, no renewal
    assert dead._renewer is not None
    dead._renewer.cancel()
    loop = asyncio.get_running_loop()
    asked = loop.time()
    with pytest.raises(WaitExpired):
        await alive.acquire(timeout_s=0.3)
    await cluster.call(alive)
    assert 0.5 <= loop.time() - asked <= 3.0  # the lease (0.6 s) ran out


async def test_a_slot_held_longer_than_its_lease_is_renewed(cluster: Cluster) -> None:
    holder, other, _ = cluster.limiters
    await holder.acquire()
    await holder.acquire()
    await asyncio.sleep(1.5)  # both slots held well past their 0.6 s lease: renewed
    with pytest.raises(WaitExpired):
        await other.acquire(timeout_s=0.3)
    holder.release()
    granted = await other.acquire(timeout_s=1.0)
    assert granted
    other.release()
    holder.release()


async def test_the_engine_makes_the_dispatchers_buckets_shared(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    settings = config.load(data_dir=tmp_path, engine={"url": redis_url})
    provider = ProviderRegistry.default(settings).get("piper")
    voice = Voice("piper", "en_US-joe-medium", "en_US-joe-medium", "joe")
    async with await Engine.open(settings.engine) as engine:
        shared = Dispatcher(settings, engine.books(tmp_path), engine.limiter_factory())
        assert isinstance(shared.limiter(provider, voice), SharedRateLimiter)
    async with await Engine.open(config.load(data_dir=tmp_path).engine) as embedded:
        own = Dispatcher(settings, embedded.books(tmp_path), embedded.limiter_factory())
        assert type(own.limiter(provider, voice)) is RateLimiter


async def test_a_bucket_with_nothing_to_share_never_asks_the_server() -> None:
    port = free_port()  # nothing listens there: any command would fail
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
    try:
        local = SharedRateLimiter("piper", client)
        granted = await local.acquire(timeout_s=1)
        local.release()
        local.succeeded(granted=granted)
        await local.count(timeout_s=1)
        local.pause(0.01)
        assert not local.shared
    finally:
        await client.aclose()


async def test_a_paid_provider_falls_back_when_the_engine_is_down(tmp_path: Path) -> None:
    port = free_port()
    async with FakeSegmind() as fake:
        settings = config.load(
            data_dir=tmp_path,
            providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}},
        )
        client = Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
        engine = Engine(settings.engine, client)  # as if its server went away after the start
        dispatcher = Dispatcher(settings, engine.books(tmp_path), engine.limiter_factory())
        pipeline = SpeechPipeline(settings, dispatcher=dispatcher)
        try:
            spoken = await pipeline.speak(SpeechRequest(text="Hello.", provider="segmind"))
            assert spoken.voice.provider == "piper"  # local: it needs no engine
            assert "the shared engine (engine.url) cannot be reached" in spoken.fallbacks[0].reason
            assert fake.billed_calls == 0
        finally:
            await pipeline.aclose()
            await client.aclose()
