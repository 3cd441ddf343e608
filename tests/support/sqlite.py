"""Another process's SQLite write lock, and a ticker showing whether the event loop still runs."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HOLD_S = 0.5


@contextmanager
def write_locked(path: Path, seconds: float = HOLD_S) -> Iterator[None]:
    """Hold ``path``'s write lock (``BEGIN IMMEDIATE``, as ``oyez schedule add`` does) from
    another connection for ``seconds``; a thread, not the loop, releases it."""
    holder = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds, holder.execute, ("COMMIT",))
    release.start()
    try:
        yield
    finally:
        release.join()
        holder.close()


async def ticks_during(work: Awaitable[T], tick_s: float = 0.01) -> tuple[T, float, int]:
    """``work``'s result, how long it took (s), and how often a ``tick_s`` ticker ran meanwhile
    (about ``seconds / tick_s`` when the loop is free, 0 or 1 when ``work`` blocks it)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(tick_s)
            ticks += 1

    counting = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        result = await work
    finally:
        counting.cancel()
    return result, time.monotonic() - started, ticks


def read_only_connect(folder: Path) -> Callable[..., sqlite3.Connection]:
    """A stand-in for ``sqlite3.connect`` that fails under ``folder`` as SQLite does in a
    read-only folder (``unable to open database file``), even for root; elsewhere the real one."""
    real = sqlite3.connect

    def connect(path: str | Path, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if Path(path).is_relative_to(folder):
            raise sqlite3.OperationalError("unable to open database file")
        connection: sqlite3.Connection = real(path, *args, **kwargs)
        return connection

    return connect
