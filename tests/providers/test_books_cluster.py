"""Several Oyez processes sharing one engine spend a budget once and open one credit circuit.

The budget test runs real processes (``tests/support/cluster_worker.py``) against the fake
Segmind; the circuit tests run independent engines (each its own connection, books and
pipeline) in this process, on a controlled clock."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import InsufficientCredits
from bot.ops import config
from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.providers.dispatch import Dispatcher
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.support.paths import ROOT
from tests.support.redis_server import redis_server, redis_url  # noqa: F401

PROCESSES, REQUESTS, BUDGET_USD, COST_USD = 3, 40, 1.00, 0.02
#: Unthrottled on our side: the budget is what is under test.
OPEN_LIMITS = {"providers": {"segmind": {"requests_per_minute": 100000, "max_concurrent": 64}}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind(costs={"chatterbox-tts": COST_USD}, credits=100.0) as server:
        yield server


def settings_for(fake: FakeSegmind, data_dir: Path, engine_url: str | None) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "providers": {"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}},
        "credits": {"costs": {"segmind": COST_USD}},
        "budgets": {"guilds": {"g1": BUDGET_USD}},
        "rate_limits": OPEN_LIMITS,
        "engine": {"url": engine_url},
    }


async def run_cluster(fake: FakeSegmind, tmp_path: Path, url: str | None) -> list[dict[str, Any]]:
    start_at = time.time() + 3.0  # every process imported and connected by then
    workers = []
    for n in range(PROCESSES):
        job = {
            "settings": settings_for(fake, tmp_path / f"process-{n}", url),
            "requests": REQUESTS,
            "guild": "g1",
            "start_at": start_at,
        }
        workers.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.cluster_worker",
                json.dumps(job),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        )
    outcomes = []
    for worker in workers:
        out, err = await asyncio.wait_for(worker.communicate(), timeout=120)
        assert worker.returncode == 0, err.decode(errors="replace")[-2000:]
        outcomes.append(json.loads(out.decode().strip().splitlines()[-1]))
    return outcomes


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "embedded-baseline"])
async def test_three_processes_spend_one_budget_once(
    fake: FakeSegmind,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    shared: bool,
) -> None:
    url = request.getfixturevalue("redis_url") if shared else None
    outcomes = await run_cluster(fake, tmp_path, url)
    assert [o["failed"] for o in outcomes] == [[]] * PROCESSES
    spoken = sum(o["spoken"] for o in outcomes)
    refused = [reason for o in outcomes for reason in o["refused"]]
    assert spoken + len(refused) == PROCESSES * REQUESTS  # none lost
    if not shared:  # the baseline: each process has a budget of its own, and spends it
        assert fake.billed_calls == spoken == PROCESSES * REQUESTS
        return
    assert fake.billed_calls == spoken == round(BUDGET_USD / COST_USD)  # 50: never one more
    assert all("this server's daily budget is $1.00" in reason for reason in refused)
    async with await Engine.open(EngineSettings(url=url)) as engine:
        books = engine.books(tmp_path)
        assert await books.spent_today(guild="g1") == pytest.approx(BUDGET_USD)


class Member:
    """One process of a cluster, in this one: its own engine connection, books and pipeline."""

    def __init__(self, settings: config.Settings, engine: Engine, clock: list[datetime]) -> None:
        books = engine.books(settings.data_dir, now=lambda: clock[0])
        self.pipeline = SpeechPipeline(settings, dispatcher=Dispatcher(settings, books))

    async def speak(self) -> str:
        """``"segmind"`` when it spoke, else the refusal."""
        try:
            await self.pipeline.speak(SpeechRequest(text="Hi.", provider="segmind", fallback=False))
        except InsufficientCredits as exc:
            return str(exc)
        return "segmind"


@pytest.fixture
async def members(
    fake: FakeSegmind,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[tuple[list[Member], list[datetime]]]:
    clock = [datetime(2026, 11, 21, 12, 0, tzinfo=UTC)]
    engines, made = [], []
    for n in range(PROCESSES):
        engine = await Engine.open(EngineSettings(url=redis_url))
        engines.append(engine)
        settings = config.load(**settings_for(fake, tmp_path / f"member-{n}", redis_url))
        made.append(Member(settings, engine, clock))
    yield made, clock
    for member, engine in zip(made, engines, strict=True):
        await member.pipeline.aclose()
        await engine.aclose()


async def test_one_406_stops_every_process_until_one_credit_check_sees_credits(
    fake: FakeSegmind, members: tuple[list[Member], list[datetime]]
) -> None:
    (first, second, third), clock = members
    assert await first.speak() == "segmind"
    fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
    assert "Insufficient credits" in await second.speak()
    paid = fake.billed_calls
    requests = len(fake.requests)
    for member in (first, second, third):  # open everywhere: nothing reaches Segmind
        assert "no paid call until the next credit check" in await member.speak()
    assert len(fake.requests) == requests

    clock[0] += timedelta(seconds=61)  # due: every process asks at once, one checks
    fake.credits = 0.0
    answers = await asyncio.gather(*(m.speak() for m in (first, second, third) for _ in range(4)))
    assert len(fake.requests_to("/v1/get-user-credits")) == 1
    assert sum("still out of credits" in a for a in answers) == 1
    assert fake.billed_calls == paid

    clock[0] += timedelta(seconds=61)
    fake.credits = 5.0
    assert await third.speak() == "segmind"  # its check saw credits and closed the circuit
    assert await first.speak() == "segmind"
    assert len(fake.requests_to("/v1/get-user-credits")) == 2
