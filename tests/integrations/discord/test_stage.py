"""Stage channels (#17 section 3), end to end on the simulated Discord: the bot joins a stage
as a speaker (or raises its hand when it may not), is heard there, and reads the stage's chat
like a voice channel's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.ops import config
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.bot import OyezBot
from integrations.discord.settings import DiscordSettings
from tests.fakes.discord import (
    ALICE,
    STAGE_CHANNEL_ID,
    FakeDiscord,
    SentInteraction,
    client_options,
    running,
)
from tests.fakes.discord.client import patched_discord
from tests.fakes.discord.listening import heard, runs
from tests.support.asr import Transcriber, word_error_rate

SENTENCE = "The talk starts in five minutes."


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(voice_states={ALICE.id: STAGE_CHANNEL_ID}) as server:
        with patched_discord(server):
            yield server


@asynccontextmanager
async def oyez(tmp_path: Path, *, read_messages: bool = False) -> AsyncIterator[OyezBot]:
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    client = OyezBot(pipeline, DiscordSettings(read_messages=read_messages), **client_options())
    try:
        async with running(client):
            yield client
    finally:
        await pipeline.aclose()


async def said(fake: FakeDiscord, sent: SentInteraction) -> str:
    found = await fake.wait_for(
        lambda: [f.content for f in fake.followups_to(sent) if f.content and "Said:" in f.content],
        timeout_s=60,
        what="the reply once said",
    )
    return str(found[-1])


async def test_say_on_a_stage_makes_the_bot_a_speaker(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    async with oyez(tmp_path) as client:
        sent = await fake.send_interaction("say", {"text": SENTENCE}, user=ALICE)
        await said(fake, sent)
        me = client.get_guild(2000).me  # type: ignore[union-attr]
        assert me.voice is not None and me.voice.suppress is False
    (join,) = [d for d in fake.voice_state_updates() if d["channel_id"]]
    assert str(join["channel_id"]) == STAGE_CHANNEL_ID
    (edit,) = fake.my_voice_state_edits
    assert (edit["suppress"], edit["channel_id"]) == (False, int(STAGE_CHANNEL_ID))
    (run,) = runs(fake.voice.packets)
    assert word_error_rate(SENTENCE, heard(run, transcriber)) <= 0.2


async def test_without_mute_members_it_asks_to_speak(fake: FakeDiscord, tmp_path: Path) -> None:
    fake.stage_moderator = False
    async with oyez(tmp_path):
        sent = await fake.send_interaction("say", {"text": SENTENCE}, user=ALICE)
        await said(fake, sent)
    refused, asked = fake.my_voice_state_edits
    assert (refused["suppress"], refused["channel_id"]) == (False, int(STAGE_CHANNEL_ID))
    assert asked["channel_id"] == int(STAGE_CHANNEL_ID)
    assert asked["request_to_speak_timestamp"]  # the raised hand
    assert runs(fake.voice.packets)  # it played; listeners hear it once accepted


async def test_the_stage_chat_is_read_aloud(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    async with oyez(tmp_path, read_messages=True):
        join = await fake.send_interaction("join", {}, user=ALICE)
        await fake.wait_for(
            lambda: [f for f in fake.followups_to(join) if f.content and "Joined" in f.content],
            what="joined the stage",
        )
        await fake.send_message("Questions come at the end.", user=ALICE, channel=STAGE_CHANNEL_ID)
        await fake.wait_for(
            lambda: [p for p in fake.voice.packets if p.is_silence],
            timeout_s=30,
            what="the stage chat read aloud",
        )
        await asyncio.sleep(0.5)
    (run,) = runs(fake.voice.packets)
    assert word_error_rate("Alice said questions come at the end", heard(run, transcriber)) <= 0.3
