"""Per-user voice choices, kept in SQLite in the data directory (``oyez.sqlite3``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bot.ops.store import Database, open_state

__all__ = ["Preferences", "VoiceChoice"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS discord_user_voices (
    user_id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT,
    voice TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class VoiceChoice:
    """A voice chosen with ``/voice set``: ``model`` is None for a named voice."""

    provider: str
    model: str | None
    voice: str

    @property
    def label(self) -> str:
        return "/".join(p for p in (self.provider, self.model, self.voice) if p)


class Preferences:
    """What each user chose with ``/voice set``; survives restarts. The SQLite work runs in a
    worker thread (:class:`~bot.ops.store.Database`): a busy file never stalls the event loop."""

    def __init__(self, data_dir: Path) -> None:
        self._db = Database(partial(open_state, data_dir, _SCHEMA))

    async def voice_of(self, user_id: int) -> VoiceChoice | None:
        """``user_id``'s choice; None when they made none."""
        row = await self._db.call(
            lambda db: db.execute(
                "SELECT provider, model, voice FROM discord_user_voices WHERE user_id = ?",
                (user_id,),
            ).fetchone()
        )
        return None if row is None else VoiceChoice(row[0], row[1], row[2])

    async def set_voice(self, user_id: int, choice: VoiceChoice) -> None:
        row = (user_id, choice.provider, choice.model, choice.voice)
        await self._db.call(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO discord_user_voices VALUES (?, ?, ?, ?)", row
            )
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)
