"""Money: the credit circuit, spend, budgets and known balances, kept in SQLite.

The ledger lives in Oyez's state file (``<data_dir>/oyez.sqlite3``) so that a restart remembers a
provider known to be out of credits and the day's spend. Each operation is one short statement,
run in a worker thread: another process holding the file's lock (up to the 5 s busy timeout)
delays that one request, not the event loop.

Days are UTC days. Amounts are USD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bot.ops.store import Database, open_state, state_path

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


@dataclass(frozen=True, slots=True)
class CircuitState:
    """An open credit circuit: no paid call goes to ``provider`` until a check passes."""

    provider: str
    opened_at: datetime
    reason: str
    next_check_at: datetime


class Ledger:
    """The SQLite-backed books. ``now`` is injectable so tests control the clock."""

    def __init__(self, data_dir: Path, now: Callable[[], datetime] | None = None) -> None:
        self.path = state_path(data_dir)
        self.now = now or (lambda: datetime.now(UTC))
        self._db = Database(partial(open_state, data_dir, _SCHEMA))

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

    async def record_spend(  # noqa: PLR0913 - keyword-only, one per column of a spend row
        self,
        *,
        provider: str,
        model: str,
        usd: float,
        request_id: str,
        estimated: bool,
        guild: str | None = None,
        requester: str | None = None,
    ) -> None:
        now = self.now()
        await self._execute(
            "INSERT INTO spend (day, at, provider, model, guild, requester, request_id, usd, "
            "estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now.date().isoformat(),
                now.isoformat(),
                provider,
                model,
                guild,
                requester,
                request_id,
                usd,
                int(estimated),
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
