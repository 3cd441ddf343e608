"""Each server's pronunciation dictionary (``/dictionary``), kept in SQLite in the data directory
(``oyez.sqlite3``) and held in memory once read: it is consulted for every request of the guild.

The pipeline applies it (:class:`bot.synthesis.pronounce.Pronunciations`) to everything said in
the guild: ``/say``, channels read aloud and announcements into its voice channels.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from bot.errors import InvalidRequest
from bot.ops.store import Database, open_state
from bot.synthesis.pronounce import MAX_ENTRY_CHARS

__all__ = ["MAX_ENTRIES", "PronunciationBook"]

#: Entries a server may keep.
MAX_ENTRIES = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS discord_pronunciations (
    guild_id INTEGER NOT NULL,
    word TEXT NOT NULL,
    spoken TEXT NOT NULL,
    PRIMARY KEY (guild_id, word)
);
"""


def _checked(what: str, value: str) -> str:
    cleaned = " ".join(value.split())
    if not cleaned:
        raise InvalidRequest(f"The {what} is empty.")
    if len(cleaned) > MAX_ENTRY_CHARS:
        raise InvalidRequest(
            f"The {what} is {len(cleaned)} characters; at most {MAX_ENTRY_CHARS} are allowed."
        )
    return cleaned


class PronunciationBook:
    """The guilds' dictionaries: word (case-folded) → how it is said."""

    def __init__(self, data_dir: Path) -> None:
        self._db = Database(partial(open_state, data_dir, _SCHEMA))
        self._held: dict[int, dict[str, str]] = {}

    async def entries(self, guild_id: int) -> dict[str, str]:
        """``guild_id``'s dictionary (a copy)."""
        held = self._held.get(guild_id)
        if held is None:
            rows = await self._db.call(
                lambda db: db.execute(
                    "SELECT word, spoken FROM discord_pronunciations WHERE guild_id = ?",
                    (guild_id,),
                ).fetchall()
            )
            held = self._held[guild_id] = {str(w): str(s) for w, s in rows}
        return dict(held)

    async def of_guild(self, guild: str) -> dict[str, str]:
        """:meth:`entries` by the guild id of a request (a string); none for another id."""
        return await self.entries(int(guild)) if guild.isdigit() else {}

    async def add(self, guild_id: int, word: str, spoken: str) -> tuple[str, str]:
        """Keep ``word`` said as ``spoken`` (replacing its entry); returns both as stored.

        Raises :class:`InvalidRequest` for an empty or over-long (:data:`MAX_ENTRY_CHARS`)
        word or spoken form, or a full dictionary (:data:`MAX_ENTRIES`); nothing is stored then.
        """
        word, spoken = _checked("word", word).casefold(), _checked("spoken form", spoken)
        current = await self.entries(guild_id)
        if word not in current and len(current) >= MAX_ENTRIES:
            raise InvalidRequest(f"This server's dictionary is full ({MAX_ENTRIES} words).")
        row = (guild_id, word, spoken)
        await self._db.call(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO discord_pronunciations VALUES (?, ?, ?)", row
            )
        )
        self._held.setdefault(guild_id, {})[word] = spoken
        return word, spoken

    async def remove(self, guild_id: int, word: str) -> str:
        """Forget ``word``; returns how it was said. Raises :class:`InvalidRequest` when the
        dictionary has no such word."""
        folded = " ".join(word.split()).casefold()
        current = await self.entries(guild_id)
        if folded not in current:
            raise InvalidRequest(
                f"{word!r} is not in this server's dictionary (see /dictionary list)."
            )
        await self._db.call(
            lambda db: db.execute(
                "DELETE FROM discord_pronunciations WHERE guild_id = ? AND word = ?",
                (guild_id, folded),
            )
        )
        self._held.get(guild_id, {}).pop(folded, None)
        return current[folded]

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)
