"""Where the shared limiter must behave as a process's own: one suite over both. ``pair``
gives two limiters of one bucket: for the local one the same limiter twice (one process), for
the shared one two limiters with their own connections to one real Redis (two processes), so
what one learns the other must follow. Real time, short windows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.providers.ratelimit import RateLimiter
from bot.providers.shared_ratelimit import SharedRateLimiter
from tests.support.redis_server import redis_server, redis_url  # noqa: F401 - fixtures

WINDOW_S, LIMIT = 0.4, 8


@pytest.fixture(params=["local", "shared"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RateLimiter, RateLimiter]]:
    options: dict[str, Any] = {"requests_per_minute": LIMIT, "max_concurrent": 4}
    options["window_s"] = WINDOW_S
    if request.param == "local":
        limiter = RateLimiter("bench", **options)
        yield limiter, limiter
        return
    url = request.getfixturevalue("redis_url")
    clients = [Redis.from_url(url, decode_responses=True) for _ in range(2)]
    yield (
        SharedRateLimiter("bench", clients[0], **options),
        SharedRateLimiter("bench", clients[1], **options),
    )
    await asyncio.sleep(0.05)  # the last lease drops
    for client in clients:
        await client.aclose()


async def call(
    limiter: RateLimiter, remaining: int | None = None, reset_s: float | None = None
) -> float:
    granted = await limiter.acquire()
    limiter.release()
    limiter.succeeded(remaining, reset_s, granted=granted)
    return granted


async def test_a_learned_limit_is_probed_back_up_step_by_step(
    pair: tuple[RateLimiter, RateLimiter],
) -> None:
    one, other = pair
    for _ in range(3):
        await call(one)
    refused = await one.acquire()  # the fourth, which the provider refuses
    one.release()
    loop = asyncio.get_running_loop()
    pause_s = 0.2
    one.pause(pause_s, refused=refused)
    ends = loop.time() + pause_s
    seen = []
    for k in range(4):  # the middle of each window after the pause: a call, then the limit
        await asyncio.sleep(max(0.0, ends + (k + 0.5) * WINDOW_S - loop.time()))
        await call(other)
        seen.append(other.state().learned_limit)
    # learned 3 (the calls that went through), then one more, two more, then the configured
    assert seen == [3, 4, 6, None]


async def test_reported_headroom_holds_back_every_caller_until_the_reset(
    pair: tuple[RateLimiter, RateLimiter],
) -> None:
    one, other = pair
    await call(one, remaining=0, reset_s=0.5)  # the provider: nothing left for 0.5 s
    await asyncio.sleep(0.05)  # (shared: the headroom reaches the server)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await call(other)
    assert loop.time() - asked >= 0.35
