"""The simulated Discord runs the real discord.py client: login, slash commands, voice, RTP.

The bot here is a minimal one defined in this file, only to prove the harness; the audio is
real speech from Oyez's own pipeline, played as Ogg Opus pass-through (no ffmpeg process and no
libopus at play time) and checked on the server side: RTP decrypted, frames counted, and
(with PyAV) decoded and transcribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.ops import config
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.audio import OggOpusSource
from tests.fakes.discord import (
    ALICE,
    GUILD_ID,
    LOUNGE_CHANNEL_ID,
    TEXT_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    client_options,
    count_silence,
    decode_opus,
    running,
)
from tests.fakes.discord.fixtures import fake_discord  # noqa: F401
from tests.support.asr import Transcriber, word_error_rate

FRAME_S = 0.020
SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz


@dataclass
class SayBot:
    """A minimal bot: ``/say text:`` defers, joins the caller's voice channel, speaks, leaves."""

    pipeline: SpeechPipeline
    bot: commands.Bot = field(init=False)
    utterances: list[Utterance] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.bot = commands.Bot(
            command_prefix="!", intents=discord.Intents.default(), **client_options()
        )
        self.bot.setup_hook = self._setup_hook  # type: ignore[method-assign]

        @self.bot.tree.command(name="say", description="Say something in your voice channel")
        @app_commands.describe(text="What to say")
        async def say(interaction: discord.Interaction, text: str) -> None:
            try:
                await self._say(interaction, text)
            except BaseException as exc:
                self.errors.append(exc)
                raise
            finally:
                self.finished.set()

    async def _setup_hook(self) -> None:
        await self.bot.tree.sync()

    async def _say(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer()
        assert isinstance(interaction.user, discord.Member)
        assert interaction.user.voice is not None and interaction.user.voice.channel is not None
        voice: discord.VoiceClient = await interaction.user.voice.channel.connect(timeout=10)
        utterance = await self.pipeline.speak(SpeechRequest(text=text))
        self.utterances.append(utterance)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        voice.play(
            OggOpusSource(utterance.audio), after=lambda _: loop.call_soon_threadsafe(done.set)
        )
        await done.wait()
        await interaction.followup.send(f"Said: {text}")
        await voice.disconnect()


@pytest.fixture
async def say_bot(tmp_path: Path) -> AsyncIterator[SayBot]:
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    try:
        yield SayBot(pipeline)
    finally:
        await pipeline.aclose()


@contextlib.asynccontextmanager
async def said(fake: FakeDiscord, say_bot: SayBot, text: str) -> AsyncIterator[float]:
    """Run the bot, send ``/say text``, wait until it has left voice; yields the send time."""
    async with running(say_bot.bot):
        start = time.monotonic()
        sent = await fake.send_interaction("say", {"text": text}, user=ALICE)
        await fake.wait_for_followup(sent, timeout_s=20)
        async with asyncio.timeout(10):
            await say_bot.finished.wait()
        await fake.wait_for(
            lambda: [d for d in fake.voice_state_updates() if d["channel_id"] is None],
            what="op 4 leaving voice",
        )
        await fake.wait_for(lambda: all(s.closed for s in fake.voice.sessions), what="voice close")
        assert not say_bot.errors
        yield start


async def test_bot_logs_in_and_syncs_the_say_command(
    fake_discord: FakeDiscord,  # noqa: F811
    say_bot: SayBot,
) -> None:
    async with running(say_bot.bot) as client:
        assert client.user is not None and client.user.name == "oyez"
        guild = client.get_guild(int(GUILD_ID))
        assert guild is not None and guild.get_member(int(ALICE.id)) is not None
        alice = guild.get_member(int(ALICE.id))
        assert alice is not None and alice.voice is not None
        assert alice.voice.channel is not None and alice.voice.channel.id == int(VOICE_CHANNEL_ID)

        message_task = asyncio.create_task(client.wait_for("message", timeout=5))
        await fake_discord.send_message("hello bot")
        message = await message_task
        assert message.author.id == int(ALICE.id) and message.channel.id == int(TEXT_CHANNEL_ID)

        moved = asyncio.create_task(client.wait_for("voice_state_update", timeout=5))
        await fake_discord.move_member(ALICE, LOUNGE_CHANNEL_ID)
        _, before, after = await moved
        assert before.channel is not None and before.channel.id == int(VOICE_CHANNEL_ID)
        assert after.channel is not None and after.channel.id == int(LOUNGE_CHANNEL_ID)

    assert [call.guild_id for call in fake_discord.sync_calls] == [None]
    (say,) = fake_discord.sync_calls[0].commands
    assert say["name"] == "say"
    assert [(o["name"], o["type"], o["required"]) for o in say["options"]] == [("text", 3, True)]
    assert fake_discord.ops(2), "IDENTIFY recorded"
    assert fake_discord.unknown_routes == []
    assert fake_discord.requests_to("/api/v10/users/@me", "GET")


async def test_say_defers_joins_voice_and_follows_up(
    fake_discord: FakeDiscord,  # noqa: F811
    say_bot: SayBot,
) -> None:
    async with said(fake_discord, say_bot, "Hello there.") as start:
        (interaction,) = fake_discord.interactions
        (response,) = fake_discord.responses_to(interaction)
        assert response.type == 5 and not response.ephemeral
        assert response.time - start < 3.0

        join = fake_discord.voice_state_updates()[0]
        assert str(join["guild_id"]) == GUILD_ID
        assert str(join["channel_id"]) == VOICE_CHANNEL_ID

        (followup,) = [f for f in fake_discord.followups_to(interaction) if f.method == "POST"]
        assert followup.content == "Said: Hello there."

        (session,) = fake_discord.voice.sessions
        assert session.identify is not None
        assert session.identify["max_dave_protocol_version"] >= 0
        assert session.identify["token"] in fake_discord.voice_tokens
        assert session.mode == "aead_xchacha20_poly1305_rtpsize"
        assert 1 in session.speaking, session.speaking
        assert session.speaking[-1] == 0
    assert fake_discord.unknown_routes == []


async def test_say_streams_the_speech_over_rtp(
    fake_discord: FakeDiscord,  # noqa: F811
    say_bot: SayBot,
    transcriber: Transcriber,
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    async with said(fake_discord, say_bot, text):
        pass
    voice = fake_discord.voice
    assert voice.errors == []
    assert voice.discoveries and voice.discoveries[0][0] == "127.0.0.1"
    packets = voice.packets
    assert len(packets) > 10

    (utterance,) = say_bot.utterances
    frames = voice.voice_frames()
    expected = utterance.duration_s / FRAME_S
    assert abs(len(frames) - expected) <= 0.05 * expected, (len(frames), expected)
    assert count_silence(p.opus for p in packets) == 5
    assert all(p.ssrc == voice.sessions[0].ssrc for p in packets)
    for before, after in itertools.pairwise(packets):
        assert after.seq == (before.seq + 1) % 65536
        assert after.timestamp - before.timestamp == SAMPLES_PER_FRAME
    # played in real time: about 20 ms per frame
    elapsed = frames[-1].time - frames[0].time
    assert elapsed == pytest.approx((len(frames) - 1) * FRAME_S, rel=0.2)

    samples = decode_opus(voice.received_opus(), rate=16_000, layout="mono")
    assert samples.shape[0] == pytest.approx(utterance.duration_s * 16_000, rel=0.05)
    heard = transcriber.transcribe_samples(samples.ravel())
    assert word_error_rate(text, heard) <= 0.2, heard


async def test_leaving_voice_sends_op4_with_null_channel(
    fake_discord: FakeDiscord,  # noqa: F811
    say_bot: SayBot,
) -> None:
    async with said(fake_discord, say_bot, "Bye."):
        joins_and_leaves = fake_discord.voice_state_updates()
        assert [d["channel_id"] is None for d in joins_and_leaves] == [False, True]
        assert joins_and_leaves[-1]["guild_id"] is not None
        events = [e for e, d in fake_discord.dispatched if e == "VOICE_STATE_UPDATE"]
        assert len(events) == 2
        assert fake_discord.voice_states["1000"] is None
        assert say_bot.bot.voice_clients == []


async def test_unknown_routes_are_logged_and_answered_404_json() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        async with session.get(fake.api_base + "/guilds/2000/nope") as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == "application/json"
        async with session.get(fake.api_base + "/users/@me") as response:
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["bot"] is True
    assert fake.unknown_routes == ["GET /api/v10/guilds/2000/nope"]
