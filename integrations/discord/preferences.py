"""Per-user choices (voice, speaking rate, the name said), kept in SQLite in the data directory
(``oyez.sqlite3``)."""

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
CREATE TABLE IF NOT EXISTS discord_user_speeds (
    user_id INTEGER PRIMARY KEY,
    speed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS discord_nicknames (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    nick TEXT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
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
    """What each user chose with ``/voice set``, ``/voice speed`` and ``/nick``; survives
    restarts. The SQLite work runs in a worker thread (:class:`~bot.ops.store.Database`): a
    busy file never stalls the event loop."""

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

    async def speed_of(self, user_id: int) -> float | None:
        """``user_id``'s speaking rate (``/voice speed``, 1.0 normal); None when never set."""
        row = await self._db.call(
            lambda db: db.execute(
                "SELECT speed FROM discord_user_speeds WHERE user_id = ?", (user_id,)
            ).fetchone()
        )
        return None if row is None else float(row[0])

    async def set_speed(self, user_id: int, speed: float | None) -> None:
        """Keep ``speed`` for ``user_id``; None forgets it (the server's default applies)."""
        if speed is None:
            await self._db.call(
                lambda db: db.execute(
                    "DELETE FROM discord_user_speeds WHERE user_id = ?", (user_id,)
                )
            )
            return
        await self._db.call(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO discord_user_speeds VALUES (?, ?)", (user_id, speed)
            )
        )

    async def nick_of(self, guild_id: int, user_id: int) -> str | None:
        """How ``user_id`` is named in ``guild_id`` (``/nick``); None when never set."""
        row = await self._db.call(
            lambda db: db.execute(
                "SELECT nick FROM discord_nicknames WHERE guild_id = ? AND user_id = ?",
                (guild_id, user_id),
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def set_nick(self, guild_id: int, user_id: int, nick: str | None) -> None:
        """Keep ``nick`` for ``user_id`` in ``guild_id``; None forgets it."""
        key = (guild_id, user_id)
        if nick is None:
            await self._db.call(
                lambda db: db.execute(
                    "DELETE FROM discord_nicknames WHERE guild_id = ? AND user_id = ?", key
                )
            )
            return
        await self._db.call(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO discord_nicknames VALUES (?, ?, ?)", (*key, nick)
            )
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)
