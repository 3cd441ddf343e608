"""Opening Oyez's SQLite files the one way they are all opened, and using them off the loop.

Oyez's own state (credit ledger, schedules, Discord preferences and guild settings) shares one
file, ``<data_dir>/oyez.sqlite3`` (:data:`STATE_FILE`), opened with :func:`open_state`; the
audio cache keeps its index beside its files. :class:`Database` runs a store's statements in a
worker thread, so a file locked by another process stalls the caller, not the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bot.errors import OyezError

__all__ = [
    "BUSY_TIMEOUT_S",
    "STATE_FILE",
    "Database",
    "NotWritable",
    "connect",
    "is_lock_timeout",
    "open_state",
    "state_path",
]

T = TypeVar("T")

#: The file name of Oyez's state in the data directory.
STATE_FILE = "oyez.sqlite3"
#: How long a statement waits for another connection's lock before ``database is locked``, s.
BUSY_TIMEOUT_S = 5.0


#: What SQLite says when it cannot create or write a file (a read-only folder or file).
_NOT_WRITABLE = ("unable to open database file", "readonly database")


class NotWritable(OyezError):
    """A database file or its folder cannot be created or written (a read-only data folder)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(
            f"cannot write {path} ({reason}): Oyez keeps its state and cache in the data folder; "
            f"make {path.parent} writable by this user, or set data_dir (OYEZ_DATA_DIR) or "
            "cache.dir (OYEZ_CACHE__DIR) to a writable folder"
        )


def state_path(data_dir: Path) -> Path:
    """``<data_dir>/oyez.sqlite3``."""
    return data_dir / STATE_FILE


def open_state(data_dir: Path, schema: str) -> sqlite3.Connection:
    """Open Oyez's state file in ``data_dir`` with ``schema`` applied (see :func:`connect`)."""
    return connect(state_path(data_dir), schema)


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating folders and tables as needed) an SQLite file shared between processes.

    Autocommit, WAL journal (readers do not block the writer: the CLI and a running bot share
    files), a :data:`BUSY_TIMEOUT_S` busy timeout, and usable from worker threads (callers hold
    their own lock). Raises :class:`NotWritable` naming the path when the folder or the file
    cannot be created or written, ``sqlite3.Error`` for the rest.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except OSError as exc:
        raise NotWritable(path, exc.strerror or str(exc)) from exc
    except sqlite3.OperationalError as exc:
        if not _not_writable(exc):
            raise
        raise NotWritable(path, str(exc)) from exc
    try:
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _use_wal(db)
        db.executescript(schema)
    except sqlite3.OperationalError as exc:
        db.close()
        if not _not_writable(exc):
            raise
        raise NotWritable(path, str(exc)) from exc
    except BaseException:
        db.close()
        raise
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch ``db`` to WAL, trying again for up to :data:`BUSY_TIMEOUT_S` while it is locked:
    SQLite answers a journal-mode change that meets another connection's lock at once, without
    its busy handler (seen when several processes open a new shared cache index together)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_lock_timeout(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)  # a worker thread's: never the event loop's


def _not_writable(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` is SQLite failing to create or write its file."""
    return any(words in str(exc) for words in _NOT_WRITABLE)


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite giving up on another connection's lock (``database is
    locked``/``busy``) after the busy timeout: worth retrying later, not a bug."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """One store's connection, made by ``opener`` on first use, used by one thread at a time.

    :meth:`call` runs ``work(connection)`` in a worker thread (``asyncio.to_thread``): waiting
    up to the busy timeout for another process's lock never blocks the event loop.
    :meth:`blocking` runs it in the calling thread (start-up, commands without a loop to keep).
    Both raise what ``work`` raises (``sqlite3.Error``), and ``sqlite3.ProgrammingError`` after
    :meth:`close`.
    """

    def __init__(self, opener: Callable[[], sqlite3.Connection]) -> None:
        self._opener = opener
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()
        # callers wait for their turn on the loop, not each in one of the executor's few threads
        self._turn = asyncio.Lock()

    def blocking(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in this thread, holding the lock."""
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            if self._db is None:
                self._db = self._opener()
            return work(self._db)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in a worker thread, one call at a time."""
        async with self._turn:
            return await asyncio.to_thread(self.blocking, work)

    def close(self) -> None:
        """Close the connection (waiting for a running call to end)."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
