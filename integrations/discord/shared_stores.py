"""The Discord stores in Redis, for processes that share an engine (``engine.url``).

:class:`RedisGuildSettings` and :class:`RedisPreferences` answer as
:class:`~integrations.discord.guilds.GuildSettingsStore` and
:class:`~integrations.discord.preferences.Preferences` do, from ``<prefix>discord:guild:<id>``
(the settings' JSON), ``<prefix>discord:voice:<user id>`` (a hash: the voice and the speed) and
``<prefix>discord:nick:<guild id>`` (a hash: user id → name). They are kept as long
as the server keeps its data (run it with its append-only file on, as the compose example
does). The client must decode responses; it belongs to the caller.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.preferences import Preferences, VoiceChoice

__all__ = ["RedisGuildSettings", "RedisPreferences"]


class RedisGuildSettings(GuildSettingsStore):
    """Each guild's :class:`GuildSettings`, shared by every process on the engine."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:  # no SQLite file
        self.client = client
        self.prefix = prefix

    async def get(self, guild_id: int) -> GuildSettings:
        stored = await self.client.get(f"{self.prefix}discord:guild:{guild_id}")
        return GuildSettings() if stored is None else GuildSettings.model_validate_json(stored)

    async def put(self, guild_id: int, settings: GuildSettings) -> None:
        await self.client.set(f"{self.prefix}discord:guild:{guild_id}", settings.model_dump_json())

    async def close(self) -> None:
        """Nothing to close: the connection is the engine's."""


class RedisPreferences(Preferences):
    """What each user chose with ``/voice set``, shared by every process on the engine."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:  # no SQLite file
        self.client = client
        self.prefix = prefix

    async def voice_of(self, user_id: int) -> VoiceChoice | None:
        fields = await self.client.hgetall(f"{self.prefix}discord:voice:{user_id}")
        if not fields or "provider" not in fields:
            return None
        model = str(fields.get("model", ""))
        return VoiceChoice(str(fields["provider"]), model or None, str(fields["voice"]))

    async def set_voice(self, user_id: int, choice: VoiceChoice) -> None:
        mapping: dict[FieldT, EncodableT] = {
            "provider": choice.provider,
            "model": choice.model or "",
            "voice": choice.voice,
        }
        await self.client.hset(f"{self.prefix}discord:voice:{user_id}", mapping=mapping)

    async def speed_of(self, user_id: int) -> float | None:
        speed = await self.client.hget(f"{self.prefix}discord:voice:{user_id}", "speed")
        return None if speed is None else float(speed)

    async def set_speed(self, user_id: int, speed: float | None) -> None:
        key = f"{self.prefix}discord:voice:{user_id}"
        if speed is None:
            await self.client.hdel(key, "speed")
        else:
            await self.client.hset(key, "speed", repr(float(speed)))

    async def nick_of(self, guild_id: int, user_id: int) -> str | None:
        nick = await self.client.hget(f"{self.prefix}discord:nick:{guild_id}", str(user_id))
        return None if nick is None else str(nick)

    async def set_nick(self, guild_id: int, user_id: int, nick: str | None) -> None:
        key = f"{self.prefix}discord:nick:{guild_id}"
        if nick is None:
            await self.client.hdel(key, str(user_id))
        else:
            await self.client.hset(key, str(user_id), nick)

    async def close(self) -> None:
        """Nothing to close: the connection is the engine's."""
