"""Opening Oyez's SQLite files the one way they are all opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect"]


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
