"""Fire claims: each schedule firing is spoken by one process, also when that process dies.

A firing is named by its announcement id, ``schedule:NAME:UNIX`` (the schedule's name and the
fire time, :meth:`bot.schedules.model.Schedule.announcement`), the same in every process. The
process that means to speak it first :meth:`~FireClaims.claim`\\ s it for a lease of
``lease_s`` seconds, :meth:`~FireClaims.renew`\\ s the lease while the announcement is under
way and marks it :meth:`~FireClaims.done` once delivered. Another process that finds it
``HELD`` waits; a lease that ran out (its holder died) is won by the next claim, so the firing
is still spoken within its grace. A holder that dies after speaking but before marking it done
has it spoken again: at least once, never lost.

Two implementations: :class:`LocalClaims` (embedded: one process, in memory) and
:class:`RedisClaims` (every process sharing one Redis; chosen by :mod:`bot.ops.engine`).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from bot.ops.scripts import RENEW_IF_HELD

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = ["DONE_KEPT_S", "Claim", "FireClaims", "LocalClaims", "RedisClaims", "firing_id"]

#: Seconds a delivered firing stays known as done (longer than any grace or catch-up).
DONE_KEPT_S = 2 * 86400.0


def firing_id(schedule: str, moment: datetime) -> str:
    """``schedule:NAME:UNIX``: the firing of schedule ``schedule`` at fire time ``moment``, as
    every process names it (and as its announcement's id)."""
    return f"schedule:{schedule}:{int(moment.timestamp())}"


class Claim(StrEnum):
    """What :meth:`FireClaims.claim` found."""

    WON = "won"  #: this caller speaks it
    HELD = "held"  #: another holds a live lease on it: wait, it may die
    DONE = "done"  #: spoken (or handed over) already


class FireClaims(Protocol):
    #: True when other processes claim the same firings (a firing this one cannot deliver is
    #: then left to them).
    shared: bool

    async def claim(self, firing: str, lease_s: float) -> Claim:
        """Claim ``firing`` for ``lease_s`` seconds if nobody holds it and it is not done."""

    async def renew(self, firing: str, lease_s: float) -> bool:
        """Extend this caller's lease on ``firing``; False when it is no longer this caller's."""

    async def done(self, firing: str) -> None:
        """``firing`` was delivered: no one claims it again (for :data:`DONE_KEPT_S`)."""


class LocalClaims:
    """Claims within one process (``clock``: monotonic seconds). Remembers the last
    ``keep`` firings."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: int = 10_000) -> None:
        self.clock = clock
        self.keep = keep
        # firing -> lease end (monotonic s), or None when done
        self._firings: OrderedDict[str, float | None] = OrderedDict()

    async def claim(self, firing: str, lease_s: float) -> Claim:
        if firing in self._firings:
            until = self._firings[firing]
            if until is None:
                return Claim.DONE
            if until > self.clock():
                return Claim.HELD
        self._remember(firing, self.clock() + lease_s)
        return Claim.WON

    async def renew(self, firing: str, lease_s: float) -> bool:
        if self._firings.get(firing) is None:
            return False
        self._remember(firing, self.clock() + lease_s)
        return True

    async def done(self, firing: str) -> None:
        self._remember(firing, None)

    def _remember(self, firing: str, until: float | None) -> None:
        self._firings[firing] = until
        self._firings.move_to_end(firing)
        while len(self._firings) > self.keep:
            self._firings.popitem(last=False)


# KEYS: the firing's key. ARGV: holder, lease ms. 'won', 'held' or 'done'.
_CLAIM = """
local value = redis.call('GET', KEYS[1])
if value == 'done' then return 'done' end
if value then return 'held' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'won'
"""


class RedisClaims:
    """Claims shared through Redis: key ``<prefix>firing:<firing>`` holds the holder's id
    (expiring with its lease, on the server's clock) or ``done``. The client must decode
    responses; it belongs to the caller."""

    shared = True

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:
        self.client = client
        self.prefix = prefix
        self.holder = uuid.uuid4().hex
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(RENEW_IF_HELD)

    def _key(self, firing: str) -> str:
        return f"{self.prefix}firing:{firing}"

    async def claim(self, firing: str, lease_s: float) -> Claim:
        found = await self._claim(keys=[self._key(firing)], args=[self.holder, _ms(lease_s)])
        return Claim(str(found))

    async def renew(self, firing: str, lease_s: float) -> bool:
        renewed = await self._renew(keys=[self._key(firing)], args=[self.holder, _ms(lease_s)])
        return bool(renewed)

    async def done(self, firing: str) -> None:
        await self.client.set(self._key(firing), "done", px=_ms(DONE_KEPT_S))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
