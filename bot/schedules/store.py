"""The ``schedules`` table of Oyez's state file, shared by ``oyez run`` and ``oyez schedule``.

A row holds the :class:`~bot.schedules.model.Schedule` as JSON, its origin (``config``, ``cli``,
``discord``, ``http``), ``since`` (fire times after it count: when it was added, changed or
resumed) and the last fire time handled with its :class:`Outcome`, which tells a restarted Oyez
what it missed. Each definition change bumps a revision the scheduler polls. A one-shot that
has fired stays, with its outcome, until removed; adding its name again replaces it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from bot.errors import InvalidRequest
from bot.ops.store import Database, open_state, state_path
from bot.schedules.model import Schedule

__all__ = ["Outcome", "ScheduleBook", "ScheduleExists", "StoredSchedule", "UnknownSchedule"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    definition TEXT NOT NULL,
    origin TEXT NOT NULL,
    since REAL NOT NULL,
    last_fired REAL,
    last_outcome TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO schedules_revision VALUES (1, 0);
"""
_BUMP = "UPDATE schedules_revision SET value = value + 1"
_COLUMNS = "definition, origin, since, last_fired, last_outcome"
_SELECT = f"SELECT {_COLUMNS} FROM schedules WHERE name = ?"  # noqa: S608 - fixed columns


class Outcome(StrEnum):
    """What became of a schedule's last fire time."""

    SPOKEN = "spoken"  # announced on time (within grace_s)
    CAUGHT_UP = "caught_up"  # missed while Oyez was down, announced late (catch_up: true)
    MISSED = "missed"  # missed while Oyez was down, skipped


class ScheduleExists(InvalidRequest):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a schedule named {name!r} exists: remove it first, or pick a new name")


class UnknownSchedule(InvalidRequest):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule named {name!r} (see: oyez schedule list)")


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _dt(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule and its bookkeeping; times are aware (UTC)."""

    schedule: Schedule
    origin: str
    since: datetime
    last_fired: datetime | None = None
    last_outcome: Outcome | None = None

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def anchor(self) -> datetime:
        """Fire times after this one are still to come (or were missed)."""
        return max(self.since, self.last_fired) if self.last_fired else self.since

    def next_fire(self, default_zone: tzinfo) -> datetime | None:
        """The next fire time, None when paused or when there is none (a finished one-shot)."""
        if not self.schedule.enabled:
            return None
        return self.schedule.next_fire(self.anchor, default_zone)

    def state(self, default_zone: tzinfo) -> str:
        """``active``, ``paused`` or ``done`` (nothing more to fire)."""
        if not self.schedule.enabled:
            return "paused"
        return "active" if self.next_fire(default_zone) is not None else "done"

    def as_json(self, default_zone: tzinfo) -> dict[str, Any]:
        """The JSON shape of ``GET /api/v1/schedules`` and ``oyez schedule list --json``: the
        schedule's fields, plus ``state``, ``next_fire`` (in the schedule's zone),
        ``last_fired``, ``last_outcome``, ``origin`` and the effective ``zone``."""
        schedule = self.schedule
        upcoming = self.next_fire(default_zone)
        zone = schedule.zone(default_zone)
        return {
            **schedule.model_dump(mode="json"),
            "zone": getattr(zone, "key", None) or str(zone),
            "state": self.state(default_zone),
            "next_fire": upcoming.astimezone(zone).isoformat() if upcoming else None,
            "last_fired": self.last_fired.astimezone(zone).isoformat() if self.last_fired else None,
            "last_outcome": self.last_outcome.value if self.last_outcome else None,
            "origin": self.origin,
        }


class ScheduleBook:
    """The ``schedules`` table. Each method is one short transaction, run in a worker thread
    (:class:`~bot.ops.store.Database`): another process's lock stalls the caller, never the
    event loop (start-up included: ``/healthz`` answers meanwhile)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = state_path(data_dir)
        self._db = Database(partial(open_state, data_dir, _SCHEMA))

    def close(self) -> None:
        self._db.close()

    async def revision(self) -> int:
        """A number that changes whenever any process changes a definition."""
        row = await self._db.call(
            lambda db: db.execute("SELECT value FROM schedules_revision").fetchone()
        )
        return int(row[0])

    @staticmethod
    def _row(row: tuple[Any, ...]) -> StoredSchedule | None:
        definition, origin, since, last_fired, outcome = row
        try:
            schedule = Schedule.model_validate_json(definition)
        except ValueError as exc:  # written by another version of Oyez
            log.error("schedules: a stored schedule cannot be read, ignored: %s", exc)
            return None
        return StoredSchedule(
            schedule, origin, datetime.fromtimestamp(since, UTC), _dt(last_fired),
            Outcome(outcome) if outcome else None,
        )  # fmt: skip

    async def all(self) -> list[StoredSchedule]:
        """Every schedule, by name."""
        rows = await self._db.call(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM schedules ORDER BY name"  # noqa: S608
            ).fetchall()
        )
        return [s for s in map(self._row, rows) if s is not None]

    async def get(self, name: str) -> StoredSchedule | None:
        row = await self._db.call(lambda db: db.execute(_SELECT, (name,)).fetchone())
        return None if row is None else self._row(row)

    async def add(self, schedule: Schedule, origin: str, now: datetime) -> StoredSchedule:
        """Store a new schedule. Raises :class:`ScheduleExists` when the name is taken (by
        anything but a finished one-shot, which is replaced)."""
        await self._db.call(lambda db: self._add(db, schedule, origin, now))
        return StoredSchedule(schedule, origin, now)

    def _add(self, db: sqlite3.Connection, schedule: Schedule, origin: str, now: datetime) -> None:
        with _transaction(db):
            row = db.execute(_SELECT, (schedule.name,)).fetchone()
            existing = None if row is None else self._row(row)
            if existing is not None:
                finished = existing.schedule.at is not None and existing.last_fired is not None
                if not finished:
                    raise ScheduleExists(existing.name)
                db.execute("DELETE FROM schedules WHERE name = ?", (schedule.name,))
            elif row is not None:
                db.execute("DELETE FROM schedules WHERE name = ?", (schedule.name,))
            db.execute(
                "INSERT INTO schedules VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                (schedule.name, schedule.model_dump_json(), origin, _ts(now), _ts(now)),
            )
            db.execute(_BUMP)

    async def remove(self, name: str) -> StoredSchedule:
        """Delete a schedule; raises :class:`UnknownSchedule`."""

        def delete(db: sqlite3.Connection) -> tuple[Any, ...]:
            with _transaction(db):
                row = db.execute(_SELECT, (name,)).fetchone()
                if row is None:
                    raise UnknownSchedule(name)
                db.execute("DELETE FROM schedules WHERE name = ?", (name,))
                db.execute(_BUMP)
            return tuple(row)

        found = self._row(await self._db.call(delete))
        assert found is not None
        return found

    async def set_enabled(self, name: str, enabled: bool, now: datetime) -> StoredSchedule:
        """Pause or resume; raises :class:`UnknownSchedule`. A resumed schedule fires from
        ``now`` on: what fell in the pause is not a miss."""
        return await self._db.call(lambda db: self._set_enabled(db, name, enabled, now))

    def _set_enabled(
        self, db: sqlite3.Connection, name: str, enabled: bool, now: datetime
    ) -> StoredSchedule:
        with _transaction(db):
            row = db.execute(_SELECT, (name,)).fetchone()
            found = None if row is None else self._row(row)
            if found is None:
                raise UnknownSchedule(name)
            db.execute(_BUMP)
            if found.schedule.enabled == enabled:
                return found
            schedule = found.schedule.model_copy(update={"enabled": enabled})
            since = now if enabled else found.since
            db.execute(
                "UPDATE schedules SET definition = ?, since = ?, updated_at = ? WHERE name = ?",
                (schedule.model_dump_json(), _ts(since), _ts(now), found.name),
            )
        return StoredSchedule(schedule, found.origin, since, found.last_fired, found.last_outcome)

    async def record(self, stored: StoredSchedule, fired: datetime, outcome: Outcome) -> None:
        """Note that ``stored``'s fire time ``fired`` was handled (not a definition change:
        the revision stays, and a definition changed meanwhile is left alone)."""
        values = (_ts(fired), outcome.value, stored.name, stored.schedule.model_dump_json())
        await self._db.call(
            lambda db: db.execute(
                "UPDATE schedules SET last_fired = ?, last_outcome = ? "
                "WHERE name = ? AND definition = ?",
                values,
            )
        )

    async def sync_config(self, schedules: list[Schedule], now: datetime) -> list[str]:
        """Make the ``config`` rows match the configuration file; returns what changed.

        Idempotent, by name: a configured schedule replaces a row of that name whatever its
        origin (the file wins); an unchanged one keeps its bookkeeping; a changed one counts
        its fire times from ``now``; a ``config`` row no longer in the file is removed.
        """
        return await self._db.call(lambda db: self._sync_config(db, schedules, now))

    @staticmethod
    def _sync_config(db: sqlite3.Connection, schedules: list[Schedule], now: datetime) -> list[str]:
        changes: list[str] = []
        wanted = {s.name.casefold(): s for s in schedules}
        with _transaction(db):
            rows = db.execute("SELECT name, definition, origin FROM schedules")
            current = {row[0].casefold(): row for row in rows.fetchall()}
            for key, (name, _, origin) in current.items():
                if origin == "config" and key not in wanted:
                    db.execute("DELETE FROM schedules WHERE name = ?", (name,))
                    changes.append(f"removed {name}")
            for key, schedule in wanted.items():
                text = schedule.model_dump_json()
                found = current.get(key)
                if found is None:
                    db.execute(
                        "INSERT INTO schedules VALUES (?, ?, 'config', ?, NULL, NULL, ?)",
                        (schedule.name, text, _ts(now), _ts(now)),
                    )
                    changes.append(f"added {schedule.name}")
                elif found[1:] != (text, "config"):
                    db.execute(
                        "UPDATE schedules SET name = ?, definition = ?, origin = 'config', "
                        "since = ?, updated_at = ? WHERE name = ?",
                        (schedule.name, text, _ts(now), _ts(now), found[0]),
                    )
                    changes.append(f"updated {schedule.name}")
            if changes:
                db.execute(_BUMP)
        return changes

    async def count(self, *, besides_config: bool = False) -> int:
        """How many schedules there are; with ``besides_config``, how many were added other
        than by the configuration file (those :meth:`sync_config` leaves alone)."""
        query = "SELECT COUNT(*) FROM schedules"
        if besides_config:
            query += " WHERE origin != 'config'"
        row = await self._db.call(lambda db: db.execute(query).fetchone())
        return int(row[0])
