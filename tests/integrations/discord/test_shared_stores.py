"""The Discord stores' conformance suite: the SQLite ones (embedded) and the Redis ones
(several processes) keep and answer the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.ops.engine import Engine
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.preferences import Preferences, VoiceChoice
from integrations.discord.shared_stores import RedisGuildSettings, RedisPreferences
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

ALBA = VoiceChoice("piper", "en_GB-alba-medium", "en_GB-alba-medium")
NAMED = VoiceChoice("grandma", None, "grandma")


@pytest.fixture
async def stores(
    engine: Engine,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> AsyncIterator[tuple[GuildSettingsStore, Preferences]]:
    if engine.client is None:
        made: tuple[GuildSettingsStore, Preferences] = (
            GuildSettingsStore(tmp_path),
            Preferences(tmp_path),
        )
    else:
        made = (RedisGuildSettings(engine.client), RedisPreferences(engine.client))
    yield made
    for store in made:
        await store.close()


async def test_guild_settings_are_kept_and_default_when_unset(
    stores: tuple[GuildSettingsStore, Preferences],
) -> None:
    guilds, _ = stores
    assert await guilds.get(7) == GuildSettings()
    chosen = GuildSettings(voice="alba", paid_roles=[3, 4], read_channel=99, name_prefix=True)
    await guilds.put(7, chosen)
    assert await guilds.get(7) == chosen
    await guilds.put(7, GuildSettings(voice="joe"))
    assert (await guilds.get(7)).voice == "joe"
    assert await guilds.get(8) == GuildSettings()


async def test_voice_choices_are_kept_with_or_without_a_model(
    stores: tuple[GuildSettingsStore, Preferences],
) -> None:
    _, voices = stores
    assert await voices.voice_of(42) is None
    await voices.set_voice(42, ALBA)
    await voices.set_voice(43, NAMED)
    assert await voices.voice_of(42) == ALBA
    assert await voices.voice_of(43) == NAMED
    await voices.set_voice(42, NAMED)
    assert await voices.voice_of(42) == NAMED


async def test_speeds_and_nicknames_are_kept_and_forgotten(
    stores: tuple[GuildSettingsStore, Preferences],
) -> None:
    _, people = stores
    assert await people.speed_of(42) is None
    await people.set_voice(42, ALBA)
    await people.set_speed(42, 1.25)
    assert await people.speed_of(42) == 1.25
    assert await people.voice_of(42) == ALBA  # the speed beside the voice, neither lost
    await people.set_speed(42, None)
    assert await people.speed_of(42) is None
    assert await people.voice_of(42) == ALBA
    assert await people.nick_of(7, 42) is None
    await people.set_nick(7, 42, "Captain")
    await people.set_nick(8, 42, "Cap")
    assert (await people.nick_of(7, 42), await people.nick_of(8, 42)) == ("Captain", "Cap")
    await people.set_nick(7, 42, None)
    assert (await people.nick_of(7, 42), await people.nick_of(8, 42)) == (None, "Cap")
