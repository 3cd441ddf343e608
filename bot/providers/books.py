"""The books' protocol: what the dispatcher needs of the credit circuit, balances and spend.

Two implementations keep it: :class:`bot.providers.credits.Ledger` (embedded: Oyez's SQLite
file, one process) and :class:`bot.providers.redis_ledger.RedisLedger` (every process that
shares one Redis shares the books). :mod:`bot.ops.engine` picks one from ``engine.url``.

A paid call's money is held before the call and settled after it: :meth:`Books.reserve` holds
the estimate only if it fits under every cap (spent today plus what other calls hold), so two
calls, in one process or in several, never both spend a budget's last cent;
:meth:`Books.record_spend` with the hold books the real cost and drops the hold;
:meth:`Books.release` drops it when the call failed. Amounts are compared in micro-USD
(:func:`micro_usd`), so fifty $0.02 calls fit a $1.00 cap exactly.

Days are UTC days. Amounts are USD.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

__all__ = ["Books", "Cap", "CircuitState", "Hold", "Refused", "Scope", "Spend", "micro_usd"]

#: What a cap counts: the spend of one provider, one guild or one requester.
Scope = Literal["provider", "guild", "requester"]


def micro_usd(usd: float) -> int:
    """``usd`` in whole micro-dollars (the unit the caps are compared in)."""
    return round(usd * 1_000_000)


@dataclass(frozen=True, slots=True)
class Spend:
    """One paid call's cost, as booked: ``usd`` spent on ``provider``'s ``model`` for the
    request ``request_id`` (its guild and requester, when it has them); ``estimated`` when the
    provider reported no cost and the configured estimate was booked."""

    provider: str
    model: str
    usd: float
    request_id: str
    estimated: bool
    guild: str | None = None
    requester: str | None = None


@dataclass(frozen=True, slots=True)
class CircuitState:
    """An open credit circuit: no paid call goes to ``provider`` until a check passes."""

    provider: str
    opened_at: datetime
    reason: str
    next_check_at: datetime


@dataclass(frozen=True, slots=True)
class Cap:
    """One daily cap a paid call counts against: the spend of ``scope`` ``key`` (a provider
    name, a guild id, a requester id) may reach ``usd`` (None: counted, never refused).
    ``what`` names it in a refusal ("this server's daily budget")."""

    scope: Scope
    key: str
    usd: float | None
    what: str

    @property
    def name(self) -> str:
        """``"<scope>:<key>"``, e.g. ``"guild:123"``."""
        return f"{self.scope}:{self.key}"


@dataclass(frozen=True, slots=True)
class Hold:
    """Money held for one call: ``usd`` against each of ``caps``, on UTC ``day``."""

    id: str
    usd: float
    caps: tuple[str, ...]
    day: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A hold refused: ``cap`` has ``spent_usd`` spent or held today, and the call would pass it."""

    cap: Cap
    spent_usd: float


class Books(Protocol):
    """The credit circuit, known balances and spend, shared by whoever shares the store."""

    now: Callable[[], datetime]

    def close(self) -> None:
        """Release what the books opened (the store's connection belongs to its opener)."""

    async def open_circuit(self, provider: str, reason: str, check_after_s: float) -> CircuitState:
        """Open (or keep open, with this reason) ``provider``'s circuit; the next credit check
        is due in ``check_after_s`` seconds. The state as stored (its first opening time)."""

    async def postpone_check(self, provider: str, check_after_s: float) -> None:
        """Move an open circuit's next check ``check_after_s`` seconds from now."""

    async def claim_check(self, provider: str, check_after_s: float) -> bool:
        """Whether this caller won the due credit check of ``provider``'s open circuit: True
        once per due check among every caller sharing the books (the next check is then
        ``check_after_s`` away for the others); False when none is due or another won it."""

    async def close_circuit(self, provider: str) -> None: ...

    async def circuit(self, provider: str) -> CircuitState | None:
        """The open circuit of ``provider``; None when closed."""

    async def set_balance(self, provider: str, remaining_usd: float) -> None: ...

    async def balance(self, provider: str) -> tuple[float, datetime] | None:
        """The last remaining-credit figure the provider reported, and when."""

    async def reserve(self, usd: float, caps: Sequence[Cap]) -> Hold | Refused:
        """Hold ``usd`` against every one of ``caps`` if it fits under each (spent today plus
        held, plus ``usd``, at most the cap); else the first cap it would pass."""

    async def release(self, hold: Hold) -> None:
        """Drop a hold whose call spent nothing."""

    async def record_spend(self, spend: Spend, hold: Hold | None = None) -> None:
        """Book ``spend`` today; the ``hold`` made for the call is dropped with it."""

    async def spent_today(
        self, *, provider: str | None = None, guild: str | None = None, requester: str | None = None
    ) -> float:
        """USD spent today (UTC) by the one of provider, guild, requester given (none: all)."""
