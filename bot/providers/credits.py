"""Money: the credit circuit, spend, budgets and known balances, kept in SQLite.

The ledger lives in ``<data_dir>/oyez.sqlite3`` so that a restart remembers a provider known to
be out of credits and the day's spend. Every operation is one short statement on a local file
(microseconds), so it runs on the event loop; the database is opened in WAL mode so the CLI and a
running bot can share it.

Days are UTC days. Amounts are USD.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.ops.store import connect, state_path

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
        self._lock = threading.Lock()
        self._db = connect(self.path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the credit circuit --------------------------------------------------------------------

    def open_circuit(self, provider: str, reason: str, check_after_s: float) -> CircuitState:
        now = self.now()
        state = CircuitState(provider, now, reason, now + timedelta(seconds=check_after_s))
        with self._lock:
            self._db.execute(
                "INSERT INTO credit_circuits VALUES (?, ?, ?, ?) ON CONFLICT(provider) DO UPDATE "
                "SET reason = excluded.reason, next_check_at = excluded.next_check_at",
                (provider, now.isoformat(), reason, state.next_check_at.isoformat()),
            )
        return self.circuit(provider) or state

    def postpone_check(self, provider: str, check_after_s: float) -> None:
        later = self.now() + timedelta(seconds=check_after_s)
        with self._lock:
            self._db.execute(
                "UPDATE credit_circuits SET next_check_at = ? WHERE provider = ?",
                (later.isoformat(), provider),
            )

    def close_circuit(self, provider: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM credit_circuits WHERE provider = ?", (provider,))

    def circuit(self, provider: str) -> CircuitState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT provider, opened_at, reason, next_check_at FROM credit_circuits "
                "WHERE provider = ?",
                (provider,),
            ).fetchone()
        if row is None:
            return None
        return CircuitState(
            row[0], datetime.fromisoformat(row[1]), row[2], datetime.fromisoformat(row[3])
        )

    # -- balances ------------------------------------------------------------------------------

    def set_balance(self, provider: str, remaining_usd: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO balances VALUES (?, ?, ?) ON CONFLICT(provider) DO UPDATE "
                "SET remaining_usd = excluded.remaining_usd, seen_at = excluded.seen_at",
                (provider, remaining_usd, self.now().isoformat()),
            )

    def balance(self, provider: str) -> tuple[float, datetime] | None:
        """The last remaining-credit figure the provider reported, and when."""
        with self._lock:
            row = self._db.execute(
                "SELECT remaining_usd, seen_at FROM balances WHERE provider = ?", (provider,)
            ).fetchone()
        return None if row is None else (float(row[0]), datetime.fromisoformat(row[1]))

    # -- spend ---------------------------------------------------------------------------------

    def record_spend(
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
        with self._lock:
            self._db.execute(
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

    def spent_today(
        self, *, provider: str | None = None, guild: str | None = None, requester: str | None = None
    ) -> float:
        """USD spent today (UTC), filtered by whichever of provider, guild, requester is given."""
        clauses, values = ["day = ?"], [self.now().date().isoformat()]
        for column, value in (("provider", provider), ("guild", guild), ("requester", requester)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        query = "SELECT COALESCE(SUM(usd), 0) FROM spend WHERE " + " AND ".join(clauses)  # noqa: S608 - fixed column names
        with self._lock:
            (total,) = self._db.execute(query, values).fetchone()
        return float(total)
