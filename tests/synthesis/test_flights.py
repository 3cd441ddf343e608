"""Synthesis flights: conformance over both engines (embedded, Redis), then three pipelines on
one engine and one cache folder asked the same new sentence at once: one paid call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.ops import config
from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.providers.dispatch import Dispatcher
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

KEY = "0f" * 32


async def test_a_key_is_led_once_until_it_lands(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    flights = engine.flights()
    assert await flights.lead(KEY, 30)
    assert not await flights.lead(KEY, 30)
    assert await flights.renew(KEY, 30)
    await flights.land(KEY)
    assert await flights.lead(KEY, 30)


async def test_a_waiter_wakes_when_the_flight_lands(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    flights = engine.flights()
    assert await flights.lead(KEY, 30)
    waiting = asyncio.create_task(flights.wait(KEY, 5))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await flights.land(KEY)
    assert await asyncio.wait_for(waiting, 1)


async def test_a_lapsed_flight_ends_the_wait_and_a_live_one_times_it_out(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    flights = engine.flights()
    assert await flights.lead(KEY, 0.2)  # and its process dies
    started = time.monotonic()
    assert await flights.wait(KEY, 5)
    assert time.monotonic() - started < 1
    assert await flights.lead(KEY, 30)
    assert not await flights.wait(KEY, 0.2)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind() as server:
        yield server


async def test_three_processes_missing_one_sentence_at_once_pay_once(
    tmp_path: Path,
    fake: FakeSegmind,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    pipelines, engines = [], []
    for n in range(3):
        settings = config.load(
            data_dir=tmp_path / f"process-{n}",
            cache={"enabled": True, "dir": str(tmp_path / "shared-cache")},  # one volume
            providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}},
            rate_limits={
                "providers": {"segmind": {"requests_per_minute": 100, "max_concurrent": 8}}
            },
        )
        opened = await Engine.open(EngineSettings(url=redis_url))
        engines.append(opened)
        dispatcher = Dispatcher(settings, opened.books(settings.data_dir), opened.limiter_factory())
        pipeline = SpeechPipeline(settings, dispatcher=dispatcher)
        pipeline.flights = opened.flights()
        pipelines.append(pipeline)
    try:
        ask = "The washing machine has finished."
        spoken = await asyncio.gather(
            *(
                pipelines[n % 3].speak(SpeechRequest(text=ask, provider="segmind"))
                for n in range(10)
            )
        )
        assert fake.billed_calls == 1
        assert sum(u.cached for u in spoken) == 9
        assert {u.voice.provider for u in spoken} == {"segmind"}
        assert len({u.audio for u in spoken}) == 1
        later = await pipelines[2].speak(SpeechRequest(text=ask, provider="segmind"))
        assert later.cached  # another process's audio
        assert fake.billed_calls == 1
    finally:
        for pipeline in pipelines:
            await pipeline.aclose()
        for opened in engines:
            await opened.aclose()


async def test_one_process_missing_one_sentence_at_once_pays_once(
    tmp_path: Path, fake: FakeSegmind
) -> None:
    """Embedded (no engine.url): ten requests of one new sentence at once, as two Discord
    members and a schedule might, make one paid call; without flights, each pays its own."""
    settings = config.load(
        data_dir=tmp_path,
        cache={"enabled": True},
        providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}},
        rate_limits={"providers": {"segmind": {"requests_per_minute": 100, "max_concurrent": 8}}},
    )
    pipeline = SpeechPipeline(settings)
    try:
        ask = "The dryer has finished."
        spoken = await asyncio.gather(
            *(pipeline.speak(SpeechRequest(text=ask, provider="segmind")) for _ in range(10))
        )
        assert fake.billed_calls == 1
        assert sum(u.cached for u in spoken) == 9
        assert len({u.audio for u in spoken}) == 1

        pipeline.flights = None  # what an embedded pipeline did before
        other = "The oven is hot."
        await asyncio.gather(
            *(pipeline.speak(SpeechRequest(text=other, provider="segmind")) for _ in range(4))
        )
        assert fake.billed_calls > 2  # the same sentence paid for more than once
    finally:
        await pipeline.aclose()
