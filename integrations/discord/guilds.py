"""Per-guild settings (``/settings``), kept in SQLite in the data directory (``oyez.sqlite3``)."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.ops.store import Database, open_state

__all__ = ["GuildSettings", "GuildSettingsStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS discord_guild_settings (
    guild_id INTEGER PRIMARY KEY,
    settings TEXT NOT NULL
);
"""


class GuildSettings(BaseModel):
    """What a server's managers set with ``/settings`` and ``/setup``. None: Oyez's
    configuration decides. Stored as JSON: a field added later takes its default for rows
    stored before it."""

    model_config = ConfigDict(extra="ignore")

    voice: str | None = Field(None, description="Default voice of the server")
    provider: str | None = Field(None, description="Default provider of the server")
    max_length: int | None = Field(None, ge=1, description="Longest /say text, characters")
    paid_roles: list[int] = Field(
        default_factory=list, description="Roles allowed to use paid providers (empty: everyone)"
    )
    idle_timeout_s: float | None = Field(None, gt=0, le=86_400)
    speed: float | None = Field(
        None, ge=0.5, le=2.0, description="Speaking rate of members who set none (1.0 normal)"
    )
    name_prefix: bool = Field(
        False, description='/say speaks "<name> said" first (when the speaker changes)'
    )
    read_channel: int | None = Field(None, description="Text channel read aloud (/setup)")
    skip_prefix: str = Field("!", max_length=10, description="Messages starting so are not read")
    read_max_length: int = Field(300, ge=10, le=2000, description="Longest message read, chars")
    read_max_s: float = Field(
        30.0, ge=5, le=120, description="Longest message read, seconds of speech (estimated)"
    )
    xsaid_gap_s: float = Field(
        60.0, ge=0, le=3600, description='"<name> said" again for the same speaker after this'
    )
    require_voice: bool = Field(
        False, description="Read only members in the voice channel the bot is in"
    )
    read_bots: bool = Field(False, description="Read messages of bots and webhooks too")
    read_role: int | None = Field(None, description="Read only members with this role")
    emoji: Literal["name", "drop"] = Field("name", description="Unicode emoji: said or dropped")
    repeat_limit: int = Field(
        2,
        ge=2,
        le=20,
        description='A letter repeated more often is said this many times ("soooo" as "soo" at 2)',
    )
    # settings stored before this field existed read as on
    read_voice_chat: bool = Field(
        True, description="Read the text chat of the voice channel the bot is in"
    )


class GuildSettingsStore:
    """Each guild's :class:`GuildSettings`; survives restarts. The SQLite work runs in a worker
    thread (:class:`~bot.ops.store.Database`): a busy file never stalls the event loop."""

    def __init__(self, data_dir: Path) -> None:
        self._db = Database(partial(open_state, data_dir, _SCHEMA))

    async def get(self, guild_id: int) -> GuildSettings:
        """``guild_id``'s settings; the defaults for a guild that set none."""
        row = await self._db.call(
            lambda db: db.execute(
                "SELECT settings FROM discord_guild_settings WHERE guild_id = ?", (guild_id,)
            ).fetchone()
        )
        return GuildSettings() if row is None else GuildSettings.model_validate_json(row[0])

    async def put(self, guild_id: int, settings: GuildSettings) -> None:
        row = (guild_id, settings.model_dump_json())
        await self._db.call(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO discord_guild_settings VALUES (?, ?)", row
            )
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)
