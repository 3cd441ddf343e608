"""``raise_if_cancelled``: a reading loop whose cancellation was swallowed (as redis-py's asyncio
client may do on a blocking command, redis/redis-py#2028) still ends."""

from __future__ import annotations

import asyncio
import contextlib

from bot.ops.streams import raise_if_cancelled


async def _swallowed_read() -> list[str]:
    """A blocking read that loses the cancellation landing on it."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0.05)
    return []


async def test_a_loop_whose_cancellation_was_swallowed_ends_at_its_next_check() -> None:
    reads = 0

    async def loop() -> None:
        nonlocal reads
        while True:
            await _swallowed_read()
            reads += 1
            raise_if_cancelled()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.12)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)  # not awaited: it would wait for ever
    assert done and task.cancelled()
    before = reads
    await asyncio.sleep(0.1)
    assert reads == before  # it stopped reading


async def test_nothing_is_raised_when_no_cancellation_was_asked() -> None:
    raise_if_cancelled()  # in a task not cancelled: returns

    async def uncancelled() -> str:
        raise_if_cancelled()
        return "read on"

    assert await asyncio.create_task(uncancelled()) == "read on"
