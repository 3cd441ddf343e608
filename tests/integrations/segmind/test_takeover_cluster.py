"""A Segmind v2 job whose process dies (SIGKILL) while polling it is resumed by another process
that synthesizes the same text: it finds the recorded ``request_id`` in the shared engine and
polls that job, never submitting (paying for) it again. Real processes, a real Redis, the
simulated Segmind."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import SynthesisFailed
from bot.providers.base import SynthesisJob
from bot.providers.jobs import LocalJobs
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.integrations.segmind.test_provider import make_provider
from tests.support.paths import ROOT
from tests.support.redis_server import redis_server, redis_url  # noqa: F401 - fixtures

MODEL = "openvoice"  # a v2 (queued) model by default
OPEN_LIMITS = {"providers": {"segmind": {"requests_per_minute": 100000, "max_concurrent": 64}}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(v2_queued_polls=10_000) as server:  # queued until the test says
        yield server


def job_for(fake: FakeSegmind, data_dir: Path, engine_url: str | None) -> dict[str, Any]:
    segmind: dict[str, Any] = {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}
    segmind |= {"default_model": MODEL, "poll": {"first_s": 0.1, "max_s": 0.2}}
    return {
        "settings": {
            "data_dir": str(data_dir),
            "providers": {"segmind": segmind},
            "rate_limits": OPEN_LIMITS,  # not the free plan's 5 a minute, polls included
            "engine": {"url": engine_url},
        },
        "requests": 1,
        "guild": "g1",
        "start_at": 0,
    }


async def start(job: dict[str, Any]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.cluster_worker",
        json.dumps(job),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def polled(fake: FakeSegmind, times: int) -> str:
    """The one job's request id, once it was polled ``times`` times."""
    async with asyncio.timeout(60):
        while not fake.jobs or next(iter(fake.jobs.values())).polls < times:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return next(iter(fake.jobs))


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "embedded-baseline"])
async def test_a_job_whose_process_died_is_resumed_by_another_never_paid_twice(
    fake: FakeSegmind, tmp_path: Path, request: pytest.FixtureRequest, shared: bool
) -> None:
    url = request.getfixturevalue("redis_url") if shared else None
    first = await start(job_for(fake, tmp_path / "one", url))
    try:
        request_id = await polled(fake, 3)  # submitted, recorded, under way
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    polls_before = fake.jobs[request_id].polls
    fake.v2_queued_polls = 0  # the job finishes at its next poll
    started = time.monotonic()
    second = await start(job_for(fake, tmp_path / "two", url))
    out, err = await asyncio.wait_for(second.communicate(), timeout=120)
    assert second.returncode == 0, err.decode(errors="replace")[-2000:]
    outcome = json.loads(out.decode().strip().splitlines()[-1])
    assert outcome == {"spoken": 1, "refused": [], "failed": []}
    if not shared:  # the baseline: the second process knows nothing of it, and pays again
        assert len(fake.requests_to(f"/v2/{MODEL}")) == fake.billed_calls == 2
        return
    assert len(fake.requests_to(f"/v2/{MODEL}")) == 1  # submitted once, by the first
    assert fake.billed_calls == 1
    assert fake.jobs[request_id].polls > polls_before  # the second polled the first's job
    assert fake.requests_to(f"/v2/requests/{request_id}")  # and fetched its result
    assert time.monotonic() - started < 30  # resumed at once, not after a lapse


async def test_a_finished_or_failed_job_is_forgotten_so_the_next_is_a_new_one() -> None:
    async with FakeSegmind() as fake:
        provider = make_provider(fake)
        provider.jobs = jobs = LocalJobs()
        try:
            voice = await provider.resolve_voice(None, MODEL)
            job = SynthesisJob("r1", "Hello.", voice, provider.validate_options(voice, {}))
            assert (await provider.synthesize(job)).chunk.data
            fake.fail_next_job("Inference failed: content blocked")
            with pytest.raises(SynthesisFailed, match="content blocked"):
                await provider.synthesize(job)
            assert (await provider.synthesize(job)).chunk.data
            assert len(fake.requests_to(f"/v2/{MODEL}")) == 3  # each one a job of its own
            assert jobs._jobs == {}  # nothing left recorded
        finally:
            await provider.aclose()
