"""Consumer-group chores shared by every Redis stream of jobs (Discord deliveries relayed to
their shard, synthesis jobs): taking over the jobs of a consumer that went silent, dropping
the consumers that ended, and ending a reading loop whose cancellation redis-py swallowed.
Redis streams: https://redis.io/docs/latest/develop/data-types/streams/; XAUTOCLAIM:
https://redis.io/docs/latest/commands/xautoclaim/.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = ["forget_consumers", "raise_if_cancelled", "take_over"]


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task was asked to stop but is still running.

    A cancellation that lands on a blocking command (XREADGROUP/XREAD with BLOCK, BLPOP) can be
    swallowed by redis-py's asyncio client (redis/redis-py#2028): the command returns as if
    nothing happened and a ``while True`` loop around it reads on forever, so whoever awaits the
    cancelled task waits forever (a test's teardown once hung on it; a shutdown would too).
    ``Task.cancelling()`` still counts the request, so a loop calls this after each command.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def take_over(  # noqa: PLR0913 - the stream, its group, the taker, then limits
    client: Redis,
    stream: str,
    group: str,
    consumer: str,
    idle_ms: int,
    *,
    per_round: int = 100,
    limit: int | None = None,
    rounds: int | None = None,
) -> list[tuple[Any, Any]]:
    """The ``(entry id, fields)`` pending in ``group`` for longer than ``idle_ms``, now
    ``consumer``'s: XAUTOCLAIM's cursor followed from the start, ``per_round`` entries a call,
    until its end, ``rounds`` calls or ``limit`` entries, whichever comes first. An entry
    deleted from the stream since it was read comes with no fields (None or empty)."""
    taken: list[tuple[Any, Any]] = []
    cursor, done = "0-0", 0
    while True:
        answer: Any = await client.xautoclaim(
            stream, group, consumer, idle_ms, start_id=cursor, count=per_round
        )
        taken += [(entry[0], entry[1]) for entry in answer[1]]
        cursor, done = str(answer[0]), done + 1
        if cursor in ("0-0", "0") or done == rounds or (limit is not None and len(taken) >= limit):
            return taken


async def forget_consumers(
    client: Redis, stream: str, group: str, keep: str, idle_ms: float
) -> None:
    """Delete ``group``'s consumers that hold no job and have been idle longer than
    ``idle_ms`` (processes that ended: each start adds one), all but ``keep``. A live one
    deleted by mistake is made again by its next read."""
    consumers: Any = await client.xinfo_consumers(stream, group)
    for consumer in consumers:
        name = str(consumer["name"])
        gone = not consumer["pending"] and int(consumer["idle"]) > idle_ms
        if gone and name != keep:
            await client.xgroup_delconsumer(stream, group, name)
