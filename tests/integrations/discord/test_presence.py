"""Presence (#17 section 4), end to end on the simulated Discord: the bot leaves a voice channel
its last human left (after ``discord.alone_timeout_s``, queue dropped and logged), stays when
someone comes back or the timeout is 0, and tells a caller who moved where it is speaking."""

from __future__ import annotations

import asyncio
import logging
import time
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
    BOT,
    LOUNGE_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    FakeUser,
    client_options,
    running,
)
from tests.fakes.discord.client import patched_discord
from tests.fakes.discord.listening import heard, runs
from tests.support.asr import Transcriber, word_error_rate

BOB = FakeUser("3001", "bob")
LONG = (
    "This is a long announcement about the garden, the bins, the weather today and the "
    "neighbours' cat, which has once again been seen sitting on the roof of the shed."
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    voice = {ALICE.id: VOICE_CHANNEL_ID, BOB.id: VOICE_CHANNEL_ID}
    async with FakeDiscord(members=[ALICE, BOB, BOT], voice_states=voice) as server:
        with patched_discord(server):
            yield server


@asynccontextmanager
async def oyez(tmp_path: Path, alone_timeout_s: float) -> AsyncIterator[OyezBot]:
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    settings = DiscordSettings(idle_timeout_s=600, alone_timeout_s=alone_timeout_s)
    client = OyezBot(pipeline, settings, **client_options())
    try:
        async with running(client):
            yield client
    finally:
        await pipeline.aclose()


def left(fake: FakeDiscord) -> list[dict[str, object]]:
    """The bot's op 4 updates that leave voice."""
    return [d for d in fake.voice_state_updates() if d["channel_id"] is None]


async def joined(fake: FakeDiscord) -> None:
    sent = await fake.send_interaction("join", {}, user=ALICE)
    await fake.wait_for(
        lambda: [f for f in fake.followups_to(sent) if f.content and "Joined" in f.content],
        what="joined",
    )


async def test_the_bot_leaves_when_the_last_human_has_gone(
    fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with oyez(tmp_path, alone_timeout_s=1.5) as client:
        await fake.send_interaction("say", {"text": LONG}, user=ALICE)
        await fake.send_interaction("say", {"text": "And one more thing."}, user=ALICE)
        await fake.wait_for(lambda: fake.voice.voice_frames(), timeout_s=30, what="speech")
        await fake.move_member(BOB, None)
        await asyncio.sleep(2.0)
        assert left(fake) == []  # alice still listens
        with caplog.at_level(logging.INFO, logger="integrations.discord.presence"):
            await fake.move_member(ALICE, LOUNGE_CHANNEL_ID)  # gone elsewhere: alone in Voice
            alone_at = time.monotonic()
            await fake.wait_for(lambda: left(fake), timeout_s=10, what="leaving an empty channel")
            waited = time.monotonic() - alone_at
        assert 1.3 <= waited < 4, waited
        assert client.voice.players == {}
        (line,) = [r.getMessage() for r in caplog.records if "alone in" in r.getMessage()]
        assert line == "guild 2000: alone in Voice for 1.5 s: leaving; 2 queued item(s) dropped"


async def test_a_human_back_in_time_keeps_it_and_0_means_stay(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with oyez(tmp_path, alone_timeout_s=1.5):
        await joined(fake)
        await fake.move_member(ALICE, None)
        await fake.move_member(BOB, None)
        await asyncio.sleep(0.5)
        await fake.move_member(BOB, VOICE_CHANNEL_ID)
        await asyncio.sleep(2.5)
        assert left(fake) == []
    async with oyez(tmp_path, alone_timeout_s=0) as client:
        await fake.move_member(ALICE, VOICE_CHANNEL_ID)
        await joined(fake)
        await fake.move_member(ALICE, None)
        await fake.move_member(BOB, None)
        await asyncio.sleep(2.5)
        assert client.voice.players  # still there
        assert len(left(fake)) <= 1  # only the first bot's leaving at its close


async def test_a_caller_who_moved_is_told_where_the_bot_speaks(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    async with oyez(tmp_path, alone_timeout_s=30):
        first = await fake.send_interaction("say", {"text": LONG}, user=ALICE)
        await fake.wait_for(lambda: fake.voice.voice_frames(), timeout_s=30, what="speech")
        await fake.move_member(ALICE, LOUNGE_CHANNEL_ID)
        await asyncio.sleep(0.3)
        busy = await fake.send_interaction("say", {"text": "Over here."}, user=ALICE)
        answer = await fake.wait_for_response(busy)
        assert answer.ephemeral
        assert answer.data["content"] == (
            f"I am speaking in <#{VOICE_CHANNEL_ID}> right now; join it, or ask again when I "
            "am done."
        )
        await fake.wait_for(
            lambda: [f for f in fake.followups_to(first) if f.content and "Said:" in f.content],
            timeout_s=60,
            what="the long one said",
        )
        # idle now: the next /say follows alice to the lounge
        again = await fake.send_interaction("say", {"text": "Over here."}, user=ALICE)
        await fake.wait_for(
            lambda: [f for f in fake.followups_to(again) if f.content and "Said:" in f.content],
            timeout_s=60,
            what="said in the lounge",
        )
    moves = [d["channel_id"] for d in fake.voice_state_updates() if d["channel_id"]]
    assert [str(m) for m in moves] == [VOICE_CHANNEL_ID, LOUNGE_CHANNEL_ID]
    *_, last = runs(fake.voice.packets)
    assert word_error_rate("Over here.", heard(last, transcriber)) <= 0.5
