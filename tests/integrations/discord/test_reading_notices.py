"""A channel read aloud is told, once an hour, when its messages are read in another voice
because the server's provider is down (the fallback chain spoke), or not read at all: the
readers otherwise hear the voice change, or nothing, and never learn why. On the simulated
Discord and the simulated Together API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.ops import config
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord import reading as reading_module
from integrations.discord.bot import OyezBot
from integrations.discord.guilds import GuildSettings
from integrations.discord.settings import DiscordSettings
from tests.fakes.discord import (
    ALICE,
    BOT,
    GUILD_ID,
    TEXT_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    client_options,
    running,
)
from tests.fakes.discord.client import patched_discord
from tests.fakes.together import FakeTogether

KEY = "test-together-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(members=[ALICE, BOT], voice_states={ALICE.id: VOICE_CHANNEL_ID}) as f:
        with patched_discord(f):
            yield f


@pytest.fixture
async def together() -> AsyncIterator[FakeTogether]:
    async with FakeTogether() as api:
        yield api


async def reading_bot(
    tmp_path: Path, together: FakeTogether, **more: Any
) -> tuple[OyezBot, SpeechPipeline]:
    settings = config.load(
        data_dir=tmp_path / "data",
        providers={"together": {"base_url": together.base_url, "api_key": KEY}},
        **({"rate_limits": {"retries": 0}} | more),
    )
    pipeline = SpeechPipeline(settings)
    client = OyezBot(pipeline, DiscordSettings(read_messages=True), **client_options())
    return client, pipeline


def notices(fake: FakeDiscord) -> list[str]:
    return [
        str(m.get("content")) for m in fake.channel_messages if m["channel_id"] == TEXT_CHANNEL_ID
    ]


async def read_one(fake: FakeDiscord, client: OyezBot, text: str) -> None:
    before = len(client.voice.history.recent(int(GUILD_ID)))
    await fake.send_message(text, user=ALICE)
    await fake.wait_for(
        lambda: len(client.voice.history.recent(int(GUILD_ID))) > before,
        timeout_s=60,
        what="the message read",
    )


async def read_in_together(fake: FakeDiscord, client: OyezBot, text: str) -> None:
    """The server reads #general in Together's af_heart; ``text`` is read."""
    server = GuildSettings(read_channel=int(TEXT_CHANNEL_ID), provider="together", voice="af_heart")
    await client.guild_settings.put(int(GUILD_ID), server)
    await read_one(fake, client, text)


async def test_a_fallback_voice_is_announced_once_per_outage(
    fake: FakeDiscord, together: FakeTogether, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    together.inject_error(503, "The server is overloaded", count=100)
    client, pipeline = await reading_bot(tmp_path, together)
    try:
        async with running(client):
            await read_in_together(fake, client, "The dinner is ready.")
            await fake.wait_for(lambda: notices(fake), timeout_s=10, what="the notice")
            (notice,) = notices(fake)
            assert notice.startswith("🔁 Reading in piper/en_US-joe-medium for now: together: ")
            assert "503" in notice or "overloaded" in notice
            (said,) = client.voice.history.recent(int(GUILD_ID))
            assert said.voice == "piper/en_US-joe-medium"  # read all the same
            await read_one(fake, client, "The bins go out tonight.")
            assert len(notices(fake)) == 1  # once, not per message
            monkeypatch.setattr(reading_module, "NOTICE_GAP_S", 0.0)
            await read_one(fake, client, "The post has come.")
            await fake.wait_for(lambda: len(notices(fake)) == 2, timeout_s=10, what="again")
    finally:
        await pipeline.aclose()
    assert KEY not in " ".join(notices(fake))


async def test_messages_no_voice_can_read_are_announced(
    fake: FakeDiscord, together: FakeTogether, tmp_path: Path
) -> None:
    together.inject_error(503, "The server is overloaded", count=100)
    client, pipeline = await reading_bot(tmp_path, together, fallback=[])
    try:
        async with running(client):
            await read_in_together(fake, client, "The dinner is ready.")
            await fake.wait_for(lambda: notices(fake), timeout_s=10, what="the notice")
            (notice,) = notices(fake)
            assert notice.startswith("⚠️ Messages are not being read aloud: ")
            (failed,) = client.voice.history.recent(int(GUILD_ID))
            assert failed.error is not None
    finally:
        await pipeline.aclose()


async def test_a_message_skipped_before_it_is_read_is_no_failure(
    fake: FakeDiscord, together: FakeTogether, tmp_path: Path
) -> None:
    """/skip while the message waits out Together's rate limit: it is not read, at once, and
    the channel is not told that reading is broken (a member chose it)."""
    together.inject_rate_limit(retry_after=30)
    client, pipeline = await reading_bot(tmp_path, together, rate_limits={"retries": 2})
    try:
        async with running(client):
            server = GuildSettings(
                read_channel=int(TEXT_CHANNEL_ID), provider="together", voice="af_heart"
            )
            await client.guild_settings.put(int(GUILD_ID), server)
            await fake.send_message("The dinner is ready.", user=ALICE)
            await fake.wait_for(
                lambda: together.requests_to("/v1/audio/speech"), timeout_s=30, what="the call"
            )
            skip = await fake.send_interaction("skip", {}, user=ALICE)
            assert (await fake.wait_for_response(skip)).data["content"] == "Skipped."
            (skipped,) = await fake.wait_for(
                lambda: client.voice.history.recent(int(GUILD_ID)), timeout_s=5, what="history"
            )
            assert skipped.error == "skipped before it was said"
            assert fake.voice.voice_frames() == []
            assert notices(fake) == []
    finally:
        await pipeline.aclose()
