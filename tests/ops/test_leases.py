"""Leases' conformance suite: each test runs against the embedded leases and the Redis ones (a
real server, tests/support/redis_server.py); then what only shared leases do."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bot.ops.engine import Engine
from bot.ops.leases import RedisLeases
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

NAME = "homeassistant:events"


async def test_a_lease_is_held_renewed_and_released(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    leases = engine.leases()
    token = await leases.acquire(NAME, 30)
    assert token is not None
    assert await leases.acquire(NAME, 30) == token  # already ours: the same token
    assert await leases.renew(NAME, token, 30)
    await leases.release(NAME, token)
    assert not await leases.renew(NAME, token, 30)
    again = await leases.acquire(NAME, 30)
    assert again is not None and again > token  # a new holding: a newer fencing token


async def test_a_lease_that_ran_out_cannot_be_renewed(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    leases = engine.leases()
    token = await leases.acquire(NAME, 0.1)
    assert token is not None
    await asyncio.sleep(0.2)
    assert not await leases.renew(NAME, token, 30)
    assert await leases.acquire("another", 30) is not None  # names are apart


async def test_of_two_holders_one_holds_until_the_lease_runs_out(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        mine, theirs = RedisLeases(client), RedisLeases(client)
        found = await asyncio.gather(*(each.acquire(NAME, 0.3) for each in (mine, theirs) * 5))
        tokens = {t for t in found if t is not None}
        assert len(tokens) == 1 and found.count(None) == 5
        holder, other = (mine, theirs) if found[0] is not None else (theirs, mine)
        (token,) = tokens
        assert not await other.renew(NAME, token, 30)  # a token is its holder's alone
        await other.release(NAME, token)  # nor can another give it up
        assert await other.acquire(NAME, 30) is None
        await asyncio.sleep(0.4)  # the holder died: its lease runs out
        taken = await other.acquire(NAME, 30)
        assert taken is not None and taken > token
        assert not await holder.renew(NAME, token, 30)  # the stale holder learns it lost it
        assert await holder.acquire(NAME, 30) is None
    finally:
        await client.aclose()
