"""Fire claims' conformance suite: each test runs against the embedded claims and the Redis
ones (a real server, tests/support/redis_server.py); then what only shared claims do."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from redis.asyncio import Redis

from bot.ops.engine import Engine
from bot.schedules.claims import Claim, RedisClaims, firing_id
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

FIRING = firing_id("bins", datetime(2026, 11, 24, 19, 0, tzinfo=UTC))


def test_a_firing_is_named_by_its_schedule_and_fire_time() -> None:
    assert FIRING == "schedule:bins:1795546800"


async def test_a_firing_is_won_once_then_held_then_done(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    claims = engine.fire_claims()
    assert await claims.claim(FIRING, 30) is Claim.WON
    assert await claims.claim(FIRING, 30) is Claim.HELD
    assert await claims.renew(FIRING, 30)
    await claims.done(FIRING)
    assert await claims.claim(FIRING, 30) is Claim.DONE
    assert not await claims.renew(FIRING, 30)  # done: nothing to hold any more
    assert await claims.claim(firing_id("bins", datetime(2026, 12, 1, tzinfo=UTC)), 30) is (
        Claim.WON
    )


async def test_of_concurrent_claims_one_wins(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    claims = engine.fire_claims()
    found = await asyncio.gather(*(claims.claim(FIRING, 30) for _ in range(20)))
    assert found.count(Claim.WON) == 1
    assert found.count(Claim.HELD) == 19


async def test_a_lease_that_ran_out_is_won_again(engine: Engine) -> None:  # noqa: F811 - the fixture imported above
    claims = engine.fire_claims()
    assert await claims.claim(FIRING, 0.1) is Claim.WON  # and its holder died
    await asyncio.sleep(0.2)
    assert await claims.claim(FIRING, 30) is Claim.WON


async def test_only_the_holder_renews_a_shared_claim(
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        mine, theirs = RedisClaims(client), RedisClaims(client)
        assert await mine.claim(FIRING, 30) is Claim.WON
        assert await theirs.claim(FIRING, 30) is Claim.HELD
        assert not await theirs.renew(FIRING, 30)
        assert await mine.renew(FIRING, 30)
        await mine.done(FIRING)
        assert await theirs.claim(FIRING, 30) is Claim.DONE
    finally:
        await client.aclose()
