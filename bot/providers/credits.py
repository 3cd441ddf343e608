"""Money: the credit circuit, spend, budgets and known balances, kept in SQLite.

The ledger lives in Oyez's state file (``<data_dir>/oyez.sqlite3``) so that a restart remembers a
provider known to be out of credits and the day's spend. Each operation is one short statement,
run in a worker thread: another process holding the file's lock (up to the 5 s busy timeout)
delays that one request, not the event loop.

It keeps :class:`bot.providers.books.Books` for one process: holds (see :meth:`Ledger.reserve`)
live in memory, behind a lock, so this process's concurrent calls never both spend a budget's
last cent; processes that share the books use :class:`bot.providers.redis_ledger.RedisLedger`.

Days are UTC days. Amounts are USD.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bot.ops.store import Database, open_state, state_path
from bot.providers.books import Cap, CircuitState, Hold, Refused, Spend, micro_usd

__all__ = ["CircuitState", "Ledger"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_circuits (
    provider TEXT PRIMARY KEY,
    opened_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    next_check_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS balances (
    provider TEXT PRIMARY KEY,
    remaining_usd REAL NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY,
    day TEXT NOT NULL,
    at TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    guild TEXT,
    requester TEXT,
    request_id TEXT NOT NULL,
    usd REAL NOT NULL,
    estimated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_day ON spend (day, provider);
"""


class Ledger:
    """The SQLite-backed books. ``now`` is injectable so tests control the clock."""

    def __init__(self, data_dir: Path, now: Callable[[], datetime] | None = None) -> None:
        self.path = state_path(data_dir)
        self.now = now or (lambda: datetime.now(UTC))
        self._db = Database(partial(open_state, data_dir, _SCHEMA))
        self._holds: dict[str, Hold] = {}
        self._holding = asyncio.Lock()
        self._hold_ids = itertools.count(1)

    def close(self) -> None:
        self._db.close()

    async def _execute(self, sql: str, values: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement, run in the database's worker thread."""
        return await self._db.call(lambda db: db.execute(sql, values).fetchall())

    # -- the credit circuit --------------------------------------------------------------------

    async def open_circuit(self, provider: str, reason: str, check_after_s: float) -> CircuitState:
        now = self.now()
        state = CircuitState(provider, now, reason, now + timedelta(seconds=check_after_s))
        await self._execute(
            "INSERT INTO credit_circuits VALUES (?, ?, ?, ?) ON CONFLICT(provider) DO UPDATE "
            "SET reason = excluded.reason, next_check_at = excluded.next_check_at",
            (provider, now.isoformat(), reason, state.next_check_at.isoformat()),
        )
        return await self.circuit(provider) or state

    async def postpone_check(self, provider: str, check_after_s: float) -> None:
        later = self.now() + timedelta(seconds=check_after_s)
        await self._execute(
            "UPDATE credit_circuits SET next_check_at = ? WHERE provider = ?",
            (later.isoformat(), provider),
        )

    async def claim_check(self, provider: str, check_after_s: float) -> bool:
        now = self.now()
        later = now + timedelta(seconds=check_after_s)
        rows = await self._execute(
            "UPDATE credit_circuits SET next_check_at = ? WHERE provider = ? "
            "AND next_check_at <= ? RETURNING provider",
            (later.isoformat(), provider, now.isoformat()),
        )
        return bool(rows)

    async def close_circuit(self, provider: str) -> None:
        await self._execute("DELETE FROM credit_circuits WHERE provider = ?", (provider,))

    async def circuit(self, provider: str) -> CircuitState | None:
        rows = await self._execute(
            "SELECT provider, opened_at, reason, next_check_at FROM credit_circuits "
            "WHERE provider = ?",
            (provider,),
        )
        if not rows:
            return None
        ((name, opened_at, reason, next_check_at),) = rows
        return CircuitState(
            name, datetime.fromisoformat(opened_at), reason, datetime.fromisoformat(next_check_at)
        )

    # -- balances ------------------------------------------------------------------------------

    async def set_balance(self, provider: str, remaining_usd: float) -> None:
        await self._execute(
            "INSERT INTO balances VALUES (?, ?, ?) ON CONFLICT(provider) DO UPDATE "
            "SET remaining_usd = excluded.remaining_usd, seen_at = excluded.seen_at",
            (provider, remaining_usd, self.now().isoformat()),
        )

    async def balance(self, provider: str) -> tuple[float, datetime] | None:
        """The last remaining-credit figure the provider reported, and when."""
        rows = await self._execute(
            "SELECT remaining_usd, seen_at FROM balances WHERE provider = ?", (provider,)
        )
        if not rows:
            return None
        ((remaining, seen_at),) = rows
        return float(remaining), datetime.fromisoformat(seen_at)

    # -- spend ---------------------------------------------------------------------------------

    async def reserve(self, usd: float, caps: Sequence[Cap]) -> Hold | Refused:
        """Hold ``usd`` against ``caps`` if it fits under each; else the cap it would pass.

        The hold lives in this process's memory until :meth:`record_spend` or :meth:`release`.
        """
        async with self._holding:
            for cap in caps:
                if cap.usd is None:
                    continue
                spent = await self.spent_today(**{cap.scope: cap.key})
                spent += sum(h.usd for h in self._holds.values() if cap.name in h.caps)
                if micro_usd(spent) + micro_usd(usd) > micro_usd(cap.usd):
                    return Refused(cap, spent)
            hold = Hold(
                f"hold-{next(self._hold_ids)}",
                usd,
                tuple(cap.name for cap in caps),
                self.now().date().isoformat(),
            )
            self._holds[hold.id] = hold
            return hold

    async def release(self, hold: Hold) -> None:
        self._holds.pop(hold.id, None)

    async def record_spend(self, spend: Spend, hold: Hold | None = None) -> None:
        """Book ``spend`` now; ``hold`` (the call's, if any) is dropped once it is.

        Under the holds' lock, as :meth:`reserve` reads spend and holds: a reserve never sees a
        call both spent and still held (which counted it twice and refused calls that fit)."""
        async with self._holding:
            try:
                await self._insert_spend(spend)
            finally:
                if hold is not None:
                    self._holds.pop(hold.id, None)

    async def _insert_spend(self, spend: Spend) -> None:
        now = self.now()
        await self._execute(
            "INSERT INTO spend (day, at, provider, model, guild, requester, request_id, usd, "
            "estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now.date().isoformat(),
                now.isoformat(),
                spend.provider,
                spend.model,
                spend.guild,
                spend.requester,
                spend.request_id,
                spend.usd,
                int(spend.estimated),
            ),
        )

    async def spent_today(
        self, *, provider: str | None = None, guild: str | None = None, requester: str | None = None
    ) -> float:
        """USD spent today (UTC), filtered by whichever of provider, guild, requester is given."""
        clauses, values = ["day = ?"], [self.now().date().isoformat()]
        for column, value in (("provider", provider), ("guild", guild), ("requester", requester)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        query = "SELECT COALESCE(SUM(usd), 0) FROM spend WHERE " + " AND ".join(clauses)  # noqa: S608 - fixed column names
        ((total,),) = await self._execute(query, tuple(values))
        return float(total)
