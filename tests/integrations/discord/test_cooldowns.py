"""``/join`` at most once per ``discord.join_cooldown_s`` per server and ``/skip`` once per
``discord.skip_cooldown_s`` per member: a use too soon is answered privately with the wait,
and does nothing; another member may still skip. On the simulated Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.ops import config
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.bot import OyezBot
from integrations.discord.settings import DiscordSettings
from tests.fakes.discord import ALICE, BOT, GUILD_ID, VOICE_CHANNEL_ID, FakeDiscord, FakeUser
from tests.fakes.discord.client import client_options, patched_discord, running

BOB = FakeUser("3001", "bob")
LONG = "This is a long announcement about the garden, the garage and the weather tomorrow. " * 3


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    voice = {ALICE.id: VOICE_CHANNEL_ID, BOB.id: VOICE_CHANNEL_ID}
    async with FakeDiscord(members=[ALICE, BOB, BOT], voice_states=voice) as server:
        with patched_discord(server):
            yield server


async def bot(tmp_path: Path, **discord: Any) -> tuple[OyezBot, SpeechPipeline]:
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    return OyezBot(pipeline, DiscordSettings(**discord), **client_options()), pipeline


async def reply(fake: FakeDiscord, name: str, user: FakeUser = ALICE, **options: Any) -> str:
    sent = await fake.send_interaction(name, options, user=user)
    response = await fake.wait_for_response(sent)
    if response.data.get("content") is None:  # deferred: the edited reply
        found = await fake.wait_for(
            lambda: [f.content for f in fake.followups_to(sent) if f.content], what="the reply"
        )
        return str(found[-1])
    assert response.ephemeral
    return str(response.data["content"])


async def test_skip_is_once_per_member_in_its_cooldown(fake: FakeDiscord, tmp_path: Path) -> None:
    client, pipeline = await bot(tmp_path, skip_cooldown_s=30)
    try:
        async with running(client):
            for _ in range(3):
                await fake.send_interaction("say", {"text": LONG}, user=ALICE)
            await fake.wait_for(lambda: fake.voice.voice_frames(), what="speech")
            assert await reply(fake, "skip") == "Skipped."
            player = client.voice.players[int(GUILD_ID)]
            await asyncio.sleep(0.3)
            waiting = len(player.pending())
            again = await reply(fake, "skip")
            assert again.startswith("⏳ /skip was used a moment ago; try again in ")
            assert 28 <= int(again.rsplit(" ", 2)[-2]) <= 30
            await asyncio.sleep(0.3)
            assert len(player.pending()) == waiting  # it skipped nothing
            assert await reply(fake, "skip", user=BOB) == "Skipped."  # another member may
            await fake.wait_for(
                lambda: len(player.pending()) == waiting - 1, what="Bob's skip to skip"
            )
    finally:
        await pipeline.aclose()


async def test_join_is_once_per_server_in_its_cooldown(fake: FakeDiscord, tmp_path: Path) -> None:
    client, pipeline = await bot(tmp_path, join_cooldown_s=10)
    try:
        async with running(client):
            assert (await reply(fake, "join")).startswith("Joined")
            later = await reply(fake, "join", user=BOB)  # per server: anyone's
            assert later.startswith("⏳ /join was used a moment ago; try again in ")
    finally:
        await pipeline.aclose()


async def test_no_cooldown_when_it_is_zero(fake: FakeDiscord, tmp_path: Path) -> None:
    client, pipeline = await bot(tmp_path, join_cooldown_s=0, skip_cooldown_s=0)
    try:
        async with running(client):
            for _ in range(3):
                assert (await reply(fake, "join")).startswith("Joined")
                assert await reply(fake, "skip") == "Nothing is being said."
    finally:
        await pipeline.aclose()
