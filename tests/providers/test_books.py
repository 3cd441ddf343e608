"""The books' conformance suite: each test runs against the embedded SQLite ledger and against
the Redis one (a real server, see tests/support/redis_server.py), which must agree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.ops.engine import Engine
from bot.providers.books import Books, Cap, Hold, Refused, Spend
from bot.providers.redis_ledger import RedisLedger
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GUILD_DOLLAR = Cap("guild", "g1", 1.0, "this server's daily budget")
PROVIDER_UNCAPPED = Cap("provider", "segmind", None, "segmind's daily budget")


@pytest.fixture
def clock() -> list[datetime]:
    return [START]


@pytest.fixture
async def books(engine: Engine, tmp_path: Path, clock: list[datetime]) -> AsyncIterator[Books]:  # noqa: F811 - the fixture imported above
    kept = engine.books(tmp_path, now=lambda: clock[0])
    yield kept
    kept.close()


async def spend(books: Books, usd: float, hold: Hold | None = None, **scopes: str) -> None:
    await books.record_spend(Spend("segmind", "chatterbox", usd, "r", False, **scopes), hold)


async def test_the_circuit_opens_keeps_its_first_opening_and_closes(
    books: Books, clock: list[datetime]
) -> None:
    assert await books.circuit("segmind") is None
    opened = await books.open_circuit("segmind", "HTTP 406", 60)
    assert opened.opened_at == START
    assert opened.next_check_at == START + timedelta(seconds=60)
    clock[0] += timedelta(seconds=30)
    again = await books.open_circuit("segmind", "only $0.01 left", 60)
    assert (again.opened_at, again.reason) == (START, "only $0.01 left")
    assert again.next_check_at == clock[0] + timedelta(seconds=60)
    await books.postpone_check("segmind", 120)
    state = await books.circuit("segmind")
    assert state is not None
    assert state.next_check_at == clock[0] + timedelta(seconds=120)
    await books.close_circuit("segmind")
    assert await books.circuit("segmind") is None
    await books.postpone_check("segmind", 60)  # a closed circuit stays closed
    assert await books.circuit("segmind") is None


async def test_a_due_credit_check_is_won_once(books: Books, clock: list[datetime]) -> None:
    assert not await books.claim_check("segmind", 60)  # no circuit: nothing to check
    await books.open_circuit("segmind", "HTTP 406", 60)
    assert not await books.claim_check("segmind", 60)  # not due yet
    clock[0] += timedelta(seconds=61)
    won = await asyncio.gather(*(books.claim_check("segmind", 60) for _ in range(10)))
    assert won.count(True) == 1
    state = await books.circuit("segmind")
    assert state is not None
    assert state.next_check_at == clock[0] + timedelta(seconds=60)
    clock[0] += timedelta(seconds=61)
    assert await books.claim_check("segmind", 60)  # the next due check


async def test_balances(books: Books, clock: list[datetime]) -> None:
    assert await books.balance("segmind") is None
    await books.set_balance("segmind", 4.25)
    clock[0] += timedelta(seconds=5)
    await books.set_balance("segmind", 4.23)
    assert await books.balance("segmind") == (4.23, clock[0])


async def test_spend_is_totalled_per_provider_guild_requester_and_day(
    books: Books, clock: list[datetime]
) -> None:
    await spend(books, 0.02, guild="g1", requester="discord:7")
    await spend(books, 0.03, guild="g2")
    await books.record_spend(Spend("openai", "tts-1", 0.015, "r2", estimated=True))
    assert await books.spent_today() == pytest.approx(0.065)
    assert await books.spent_today(provider="segmind") == pytest.approx(0.05)
    assert await books.spent_today(guild="g1") == pytest.approx(0.02)
    assert await books.spent_today(requester="discord:7") == pytest.approx(0.02)
    assert await books.spent_today(guild="nowhere") == 0
    clock[0] += timedelta(days=1)
    assert await books.spent_today(provider="segmind") == 0


async def test_holds_fit_a_cap_exactly_and_refuse_past_it(books: Books) -> None:
    holds = [await books.reserve(0.02, [GUILD_DOLLAR]) for _ in range(50)]
    assert all(isinstance(h, Hold) for h in holds)  # fifty $0.02 make $1.00: they all fit
    refused = await books.reserve(0.02, [PROVIDER_UNCAPPED, GUILD_DOLLAR])
    assert isinstance(refused, Refused)
    assert refused.cap == GUILD_DOLLAR
    assert refused.spent_usd == pytest.approx(1.0)
    first = holds[0]
    assert isinstance(first, Hold)
    await books.release(first)  # its call failed: the money is free again
    assert isinstance(await books.reserve(0.02, [GUILD_DOLLAR]), Hold)
    assert isinstance(await books.reserve(0.02, [GUILD_DOLLAR]), Refused)


async def test_a_settled_hold_counts_as_spend_once(books: Books) -> None:
    hold = await books.reserve(0.5, [GUILD_DOLLAR])
    assert isinstance(hold, Hold)
    await spend(books, 0.3, hold, guild="g1")  # the call cost less than estimated
    assert await books.spent_today(guild="g1") == pytest.approx(0.3)
    assert isinstance(await books.reserve(0.7, [GUILD_DOLLAR]), Hold)  # 0.3 + 0.7 fits
    over = await books.reserve(0.01, [GUILD_DOLLAR])
    assert isinstance(over, Refused)
    assert over.spent_usd == pytest.approx(1.0)


async def test_uncapped_and_other_scopes_never_refuse(books: Books) -> None:
    await spend(books, 5.0, guild="g2")
    assert isinstance(await books.reserve(0.9, [PROVIDER_UNCAPPED, GUILD_DOLLAR]), Hold)
    other = Cap("guild", "g2", None, "this server's daily budget")
    assert isinstance(await books.reserve(100.0, [other]), Hold)


async def test_concurrent_holds_never_pass_the_cap(books: Books) -> None:
    outcomes = await asyncio.gather(*(books.reserve(0.02, [GUILD_DOLLAR]) for _ in range(120)))
    assert sum(isinstance(o, Hold) for o in outcomes) == 50


async def test_a_hold_its_process_never_settled_expires(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        books = RedisLedger(client, now=lambda: START, hold_s=0.2)
        assert isinstance(await books.reserve(1.0, [GUILD_DOLLAR]), Hold)  # and then it died
        assert isinstance(await books.reserve(0.02, [GUILD_DOLLAR]), Refused)
        await asyncio.sleep(0.3)
        assert isinstance(await books.reserve(0.02, [GUILD_DOLLAR]), Hold)
    finally:
        await client.aclose()


async def test_the_shared_books_refuse_a_combined_filter(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="one total per provider, guild or requester"):
            await RedisLedger(client).spent_today(provider="segmind", guild="g1")
    finally:
        await client.aclose()


async def test_a_call_being_booked_is_counted_once_by_a_reserve_meanwhile(books: Books) -> None:
    """A reserve that runs while a call's spend is being written sees the call spent or held,
    never both: counted twice, it refused calls that fit (seen in a 3-process run: 119 of 120
    paid where each process's budget had room for all)."""
    cap = Cap("guild", "g1", 0.05, "this server's daily budget")
    first = await books.reserve(0.02, [cap])
    assert isinstance(first, Hold)
    booking = asyncio.create_task(spend(books, 0.02, first, guild="g1"))
    await asyncio.sleep(0)  # the spend row is being written, the hold not yet dropped
    second = await books.reserve(0.02, [cap])
    await booking
    assert isinstance(second, Hold), second  # $0.02 spent + $0.02 asked fit under $0.05
    assert await books.spent_today(guild="g1") == pytest.approx(0.02)
