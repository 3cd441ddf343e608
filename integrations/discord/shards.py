"""The Discord bot as gateway shards, some of them in each process (``discord.shard_count``,
``discord.shard_ids``), their IDENTIFYs spaced across every process.

Discord (discord-api-docs, ``gateway.mdx`` §Sharding): the shard of a guild is
``(guild_id >> 22) % shard_count``; a bot may start ``max_concurrency`` sessions per 5 s, one
per bucket ``shard_id % max_concurrency`` (``GET /gateway/bot``'s ``session_start_limit``); a
bucket identifying twice in a window gets its session invalidated (op 9). discord.py's
``AutoShardedClient`` runs a subset of the shards (``shard_ids``) and spaces identifies only
inside its own process (its ``before_identify_hook`` sleeps 5 s). :class:`IdentifyGate` holds
a lock per bucket on the shared engine for the window instead, so processes started together
never identify in the same bucket at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

import discord
from discord.gateway import KeepAliveHandler

from integrations.discord.bot import OyezBot
from integrations.discord.settings import DiscordSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bot.synthesis.pipeline import SpeechPipeline

__all__ = [
    "IDENTIFY_WINDOW_S",
    "IdentifyGate",
    "ShardedOyezBot",
    "close_stray_websockets",
    "shard_of",
]

log = logging.getLogger(__name__)

#: Seconds one bucket waits between two IDENTIFYs: Discord's 5 s plus a margin for the time
#: between taking the lock and the IDENTIFY reaching Discord.
IDENTIFY_WINDOW_S = 5.25


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives ``guild_id``'s events (Discord's formula)."""
    return (guild_id >> 22) % shard_count


async def close_stray_websockets(client: discord.Client) -> int:
    """Close the gateway websockets of ``client`` still open after its ``close()``; how many.

    discord.py's ``AutoShardedClient.close`` closes the shards it has launched, not one still
    connecting (its heartbeat thread starts at HELLO, before the IDENTIFY waits its turn):
    that thread would go on and, once the event loop is closed, fail ("Event loop is closed").
    Found by their heartbeat threads (discord.py's ``KeepAliveHandler``), which belong to the
    client whose connection state they were made with."""
    state = getattr(client, "_connection", None)
    stray = [
        t.ws
        for t in threading.enumerate()
        if isinstance(t, KeepAliveHandler) and getattr(t.ws, "_connection", None) is state
    ]
    for ws in stray:
        await ws.close(code=1000)
    return len(stray)


class IdentifyGate:
    """One IDENTIFY per bucket per ``window_s`` across every process sharing ``client``.

    The lock of bucket ``shard_id % max_concurrency`` is a key set with ``NX`` and a
    ``window_s`` expiry, never released early: it lapses when the window is over. A waiter
    sleeps for what is left of it, then tries again."""

    def __init__(self, client: Redis, prefix: str, window_s: float = IDENTIFY_WINDOW_S) -> None:
        self.client = client
        self.prefix = prefix
        self.window_ms = round(window_s * 1000)

    async def wait(self, shard_id: int, max_concurrency: int) -> None:
        """Return once ``shard_id`` may identify. When the engine cannot be reached, waits a
        whole window instead (as discord.py does within one process)."""
        from redis.exceptions import RedisError

        bucket = shard_id % max(1, max_concurrency)
        key = f"{self.prefix}discord:identify:{bucket}"
        holder = secrets.token_hex(8)
        try:
            while not await self.client.set(key, holder, nx=True, px=self.window_ms):
                left_ms = await self.client.pttl(key)
                await asyncio.sleep(max(left_ms, 5) / 1000)
        except (RedisError, OSError) as exc:
            log.warning("discord: shard %s identifies after a full window: %s", shard_id, exc)
            await asyncio.sleep(self.window_ms / 1000)
            return
        log.debug("discord: shard %s may identify (bucket %s)", shard_id, bucket)


class ShardedOyezBot(OyezBot, discord.AutoShardedClient):
    """:class:`OyezBot` as discord.py's ``AutoShardedClient``: the ``shard_ids`` of
    ``shard_count`` (all of them when unset). ``gate`` spaces its IDENTIFYs with the other
    processes' (None: discord.py's own spacing, inside this process only). Only the process
    running shard 0 syncs the slash commands."""

    def __init__(
        self,
        pipeline: SpeechPipeline,
        settings: DiscordSettings,
        *,
        gate: IdentifyGate | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            pipeline,
            settings,
            shard_count=settings.shard_count,
            shard_ids=settings.shard_ids,
            **options,
        )
        self.gate = gate
        self.max_concurrency: int | None = None
        self._launch: asyncio.Task[None] | None = None

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self.gate is None:
            await super().before_identify_hook(shard_id, initial=initial)
            return
        if self.max_concurrency is None:
            self.max_concurrency = (await self.fetch_session_start_limits()).max_concurrency
        await self.gate.wait(shard_id or 0, self.max_concurrency)

    async def launch_shards(self) -> None:
        """discord.py's, in a task that :meth:`close` cancels: it would go on launching shards
        (each IDENTIFY waiting its turn) after the bot closed."""
        self._launch = asyncio.create_task(super().launch_shards(), name="oyez-discord-shards")
        try:
            await self._launch
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.is_closed() or (task is not None and task.cancelling()):
                raise

    async def setup_hook(self) -> None:
        if 0 in (self.shard_ids or [0]):
            await super().setup_hook()

    async def close(self) -> None:
        """Close the shards, those still connecting included (see
        :func:`close_stray_websockets`)."""
        if self._launch is not None:
            self._launch.cancel()
        # discord.py's AutoShardedClient.close puts on a queue it makes at login: a bot built
        # but never started (a start-up error elsewhere) would fail to close
        if not hasattr(self, "_AutoShardedClient__queue"):
            self._AutoShardedClient__queue: asyncio.PriorityQueue[Any] = asyncio.PriorityQueue()
        await super().close()
        await close_stray_websockets(self)
