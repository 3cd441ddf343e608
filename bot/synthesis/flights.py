"""Synthesis flights: when several processes miss the same cache key at once, one synthesizes.

The first to :meth:`~Flights.lead` a cache key makes the audio (and puts it into the cache that
every process reads, on the shared data folder); the others :meth:`~Flights.wait` until it
:meth:`~Flights.land`\\ s, then take it from the cache: one paid call for the lot. A flight
is a lease of ``lease_s`` seconds, renewed while the synthesis runs; one whose process died
lapses and the next asker leads.

:class:`LocalFlights` keeps flights among the tasks of this process (an embedded pipeline's:
two Discord members or a schedule and an event asking one new sentence at once pay for one
call), :class:`RedisFlights` in Redis (chosen by :mod:`bot.ops.engine` when ``engine.url`` is
set). A request whose audio is streamed as it is made (live) is not flown: in one process,
a request of the same audio meanwhile reads its stream instead
(:meth:`bot.audio.live.LiveUtterance.follow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from bot.ops.scripts import DELETE_IF_HELD, RENEW_IF_HELD

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = ["FLIGHT_LEASE_S", "Flights", "LocalFlights", "RedisFlights", "flown"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a flight outlives its last renewal (its process died mid-synthesis).
FLIGHT_LEASE_S = 10.0
#: Seconds between two looks at a flight another process leads.
POLL_S = 0.05


class Flights(Protocol):
    async def lead(self, key: str, lease_s: float) -> bool:
        """True when this caller is to synthesize ``key`` (no live flight had it)."""

    async def renew(self, key: str, lease_s: float) -> bool:
        """Extend this caller's flight of ``key``; False when it is not this caller's any more."""

    async def land(self, key: str) -> None:
        """This caller's flight of ``key`` is over (its audio is in the cache, or it failed)."""

    async def wait(self, key: str, timeout_s: float) -> bool:
        """Wait until the flight of ``key`` lands or lapses; False after ``timeout_s``."""


class LocalFlights:
    """Flights among the tasks of this process; ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._flights: dict[str, tuple[float, asyncio.Event]] = {}

    async def lead(self, key: str, lease_s: float) -> bool:
        flight = self._flights.get(key)
        if flight is not None and flight[0] > self.clock():
            return False
        self._flights[key] = (self.clock() + lease_s, asyncio.Event())
        return True

    async def renew(self, key: str, lease_s: float) -> bool:
        flight = self._flights.get(key)
        if flight is None:
            return False
        self._flights[key] = (self.clock() + lease_s, flight[1])
        return True

    async def land(self, key: str) -> None:
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight[1].set()

    async def wait(self, key: str, timeout_s: float) -> bool:
        deadline = self.clock() + timeout_s
        while (flight := self._flights.get(key)) is not None:
            until, landed = flight
            left = min(until, deadline) - self.clock()
            if left <= 0:
                return until <= self.clock()  # lapsed: done waiting; else timed out
            try:
                async with asyncio.timeout(left):
                    await landed.wait()
            except TimeoutError:
                continue
            return True
        return True


class RedisFlights:
    """Flights in Redis: ``<prefix>flight:<key>`` holds the leader's id and expires with its
    lease (the server's clock). The client must decode responses; it belongs to the caller."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:
        self.client = client
        self.prefix = prefix
        self.holder = uuid.uuid4().hex
        self._renew = client.register_script(RENEW_IF_HELD)
        self._land = client.register_script(DELETE_IF_HELD)

    def _key(self, key: str) -> str:
        return f"{self.prefix}flight:{key}"

    async def lead(self, key: str, lease_s: float) -> bool:
        return bool(await self.client.set(self._key(key), self.holder, nx=True, px=_ms(lease_s)))

    async def renew(self, key: str, lease_s: float) -> bool:
        return bool(await self._renew(keys=[self._key(key)], args=[self.holder, _ms(lease_s)]))

    async def land(self, key: str) -> None:
        await self._land(keys=[self._key(key)], args=[self.holder])

    async def wait(self, key: str, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await self.client.exists(self._key(key)):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def flown(
    flights: Flights,
    key: str,
    *,
    make: Callable[[], Awaitable[T]],
    cached: Callable[[], Awaitable[T | None]],
    wait_s: float,
    lease_s: float = FLIGHT_LEASE_S,
) -> T:
    """``make()``'s result when this caller leads ``key``'s flight (renewed while it runs,
    landed after), else ``cached()``'s once the other flight landed. A flight that landed with
    nothing in the cache under ``key`` (it failed, or another voice spoke) is led again; one
    still up after ``wait_s`` seconds, or flights that cannot be reached, and ``make()`` runs
    all the same (a second paid call rather than none)."""
    while True:
        try:
            leading = await flights.lead(key, lease_s)
        except Exception as exc:
            log.warning("synthesis flights cannot be reached (%s): synthesizing here", exc)
            return await make()
        if leading:  # a flight may have landed since the caller missed: look again first
            return await _lead(flights, key, _first_cached(cached, make), lease_s)
        try:
            landed = await flights.wait(key, wait_s)
        except Exception as exc:
            log.warning("synthesis flights cannot be reached (%s): synthesizing here", exc)
            return await make()
        if not landed:
            log.warning("%s: another request is still synthesizing it: synthesizing here", key)
            return await make()
        found = await cached()
        if found is not None:
            return found


def _first_cached(
    cached: Callable[[], Awaitable[T | None]], make: Callable[[], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    async def either() -> T:
        found = await cached()
        return found if found is not None else await make()

    return either


async def _lead(flights: Flights, key: str, make: Callable[[], Awaitable[T]], lease_s: float) -> T:
    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            with contextlib.suppress(Exception):  # a missed renewal: the next, or a lapse
                await flights.renew(key, lease_s)

    renewing = asyncio.create_task(renew(), name=f"oyez-flight-{key[:12]}")
    try:
        return await make()
    finally:
        renewing.cancel()
        with contextlib.suppress(Exception):  # unlanded, it lapses
            await flights.land(key)
