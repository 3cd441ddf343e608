"""Opening Oyez's SQLite files the one way they are all opened.

Oyez's own state (credit ledger, schedules, Discord preferences and guild settings) shares one
file, ``<data_dir>/oyez.sqlite3`` (:data:`STATE_FILE`), opened with :func:`open_state`; the
audio cache keeps its index beside its files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["STATE_FILE", "connect", "open_state", "state_path"]

#: The file name of Oyez's state in the data directory.
STATE_FILE = "oyez.sqlite3"


def state_path(data_dir: Path) -> Path:
    """``<data_dir>/oyez.sqlite3``."""
    return data_dir / STATE_FILE


def open_state(data_dir: Path, schema: str) -> sqlite3.Connection:
    """Open Oyez's state file in ``data_dir`` with ``schema`` applied (see :func:`connect`)."""
    return connect(state_path(data_dir), schema)


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating folders and tables as needed) an SQLite file shared between processes.

    Autocommit, WAL journal (readers do not block the writer: the CLI and a running bot share
    files), a 5 s busy timeout, and usable from worker threads (callers hold their own lock).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    return db
