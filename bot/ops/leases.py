"""Leases: one holder at a time of a named duty (Home Assistant's event subscription), with a
fencing token, handed to another process within ``ttl_s`` of its holder dying.

:meth:`~Leases.acquire` returns a fencing token (an integer that grows each time the lease
changes hands: a holder whose token is older than the current one has lost it) or None while
another holds it; the holder :meth:`~Leases.renew`\\ s it with that token well before ``ttl_s``
runs out (a renewal with a stale token fails, so a holder that was paused past its lease learns
it lost it and stops) and :meth:`~Leases.release`\\ s it when it stops. A holder that dies stops
renewing, its lease runs out on the server's clock, and the next :meth:`~Leases.acquire` wins it.

Two implementations: :class:`LocalLeases` (embedded: one process, in memory) and
:class:`RedisLeases` (every process sharing one Redis; chosen by :mod:`bot.ops.engine`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bot.ops.scripts import DELETE_IF_HELD, RENEW_IF_HELD

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = ["Leases", "LocalLeases", "RedisLeases"]


class Leases(Protocol):
    #: Who this caller is (one per process): the holder the leases name.
    holder: str

    async def acquire(self, name: str, ttl_s: float) -> int | None:
        """Lease ``name`` for ``ttl_s`` seconds: its fencing token (already this caller's: the
        same token, the lease extended), or None while another caller holds it."""

    async def renew(self, name: str, token: int, ttl_s: float) -> bool:
        """Extend this caller's lease ``token`` on ``name`` by ``ttl_s`` seconds; False when it
        ran out or changed hands since (``token`` is stale): stop what it guards."""

    async def release(self, name: str, token: int) -> None:
        """Give ``name`` up (if ``token`` still holds it), so another takes it over at once."""


class LocalLeases:
    """Leases within one process (``clock``: monotonic seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.holder = uuid.uuid4().hex
        self._fences: dict[str, int] = {}
        # name -> (holder, token, until)
        self._held: dict[str, tuple[str, int, float]] = {}

    def _live(self, name: str) -> tuple[str, int, float] | None:
        held = self._held.get(name)
        if held is None or held[2] <= self.clock():
            return None
        return held

    async def acquire(self, name: str, ttl_s: float) -> int | None:
        held = self._live(name)
        if held is not None and held[0] != self.holder:
            return None
        if held is not None:
            token = held[1]
        else:
            token = self._fences.get(name, 0) + 1
            self._fences[name] = token
        self._held[name] = (self.holder, token, self.clock() + ttl_s)
        return token

    async def renew(self, name: str, token: int, ttl_s: float) -> bool:
        held = self._live(name)
        if held is None or held[:2] != (self.holder, token):
            return False
        self._held[name] = (self.holder, token, self.clock() + ttl_s)
        return True

    async def release(self, name: str, token: int) -> None:
        held = self._held.get(name)
        if held is not None and held[:2] == (self.holder, token):
            del self._held[name]


# KEYS: the lease, its fence counter. ARGV: holder, ttl ms. The token, or false while held.
_ACQUIRE = """
local value = redis.call('GET', KEYS[1])
if value then
  local holder, token = string.match(value, '^(.*) (%d+)$')
  if holder ~= ARGV[1] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""


class RedisLeases:
    """Leases shared through Redis: key ``<prefix>lease:<name>`` holds ``'<holder> <token>'``
    and expires with the lease (on the server's clock); ``<prefix>lease:<name>:fence`` counts
    the tokens given out. The client must decode responses; it belongs to the caller."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:
        self.client = client
        self.prefix = prefix
        self.holder = uuid.uuid4().hex
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(RENEW_IF_HELD)
        self._release = client.register_script(DELETE_IF_HELD)

    def _key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    async def acquire(self, name: str, ttl_s: float) -> int | None:
        key = self._key(name)
        token = await self._acquire(keys=[key, f"{key}:fence"], args=[self.holder, _ms(ttl_s)])
        return None if token is None else int(token)

    async def renew(self, name: str, token: int, ttl_s: float) -> bool:
        value = f"{self.holder} {token}"
        return bool(await self._renew(keys=[self._key(name)], args=[value, _ms(ttl_s)]))

    async def release(self, name: str, token: int) -> None:
        await self._release(keys=[self._key(name)], args=[f"{self.holder} {token}"])


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
