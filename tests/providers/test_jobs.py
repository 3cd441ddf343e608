"""Queued jobs' conformance suite: each test runs against the embedded records and the Redis
ones (a real server, tests/support/redis_server.py)."""

from __future__ import annotations

import asyncio

from bot.ops.engine import Engine
from bot.providers.jobs import job_key
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

KEY = job_key("segmind", "openvoice", {"text": "Hello.", "input_audio": "a.mp3"})


def test_a_job_is_named_by_what_was_submitted_whatever_its_order() -> None:
    same = job_key("segmind", "openvoice", {"input_audio": "a.mp3", "text": "Hello."})
    assert same == KEY and KEY.startswith("segmind:openvoice:")
    assert job_key("segmind", "openvoice", {"text": "Hello!", "input_audio": "a.mp3"}) != KEY
    assert job_key("segmind", "chatterbox-tts", {"text": "Hello.", "input_audio": "a.mp3"}) != (KEY)


async def test_a_recorded_job_is_found_until_forgotten(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    jobs = engine.queued_jobs()
    assert await jobs.find(KEY) is None
    await jobs.record(KEY, "job-1", 60)
    assert await jobs.find(KEY) == "job-1"
    await jobs.forget(KEY, "job-0")  # not that job: kept
    assert await jobs.find(KEY) == "job-1"
    await jobs.forget(KEY, "job-1")
    assert await jobs.find(KEY) is None
    await jobs.forget(KEY, "job-1")  # twice: no error


async def test_a_record_lapses_with_its_ttl(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    jobs = engine.queued_jobs()
    await jobs.record(KEY, "job-1", 0.1)
    await asyncio.sleep(0.2)
    assert await jobs.find(KEY) is None


async def test_records_are_shared_by_every_process_on_the_engine(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    from bot.ops.config import EngineSettings

    async with (
        await Engine.open(EngineSettings(url=redis_url)) as one,
        await Engine.open(EngineSettings(url=redis_url)) as other,
    ):
        await one.queued_jobs().record(KEY, "job-1", 60)
        assert await other.queued_jobs().find(KEY) == "job-1"
