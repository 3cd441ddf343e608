"""A saved voice that is gone (the provider retired it, or is no longer configured) passes a
member's words on to the server's voice, then to the default one: /say says so in its reply,
a channel read aloud still reads them. A voice asked for in /say itself is not replaced.
End to end on the simulated Discord, heard by the recogniser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import UnknownVoice
from bot.ops import config
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.bot import OyezBot
from integrations.discord.guilds import GuildSettings
from integrations.discord.preferences import VoiceChoice
from integrations.discord.saved_voice import choices, prepare_first
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
from tests.fakes.discord.listening import heard, runs
from tests.support.asr import Transcriber, word_error_rate

RETIRED = VoiceChoice("piper", None, "en_US-retired-medium")
SENTENCE = "The washing machine has finished its long cycle."


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(members=[ALICE, BOT], voice_states={ALICE.id: VOICE_CHANNEL_ID}) as f:
        with patched_discord(f):
            yield f


@pytest.fixture
async def oyez(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[OyezBot]:  # noqa: ARG001 - patches discord.py in
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    client = OyezBot(pipeline, DiscordSettings(read_messages=True), **client_options())
    try:
        async with running(client):
            yield client
    finally:
        await pipeline.aclose()


async def said(fake: FakeDiscord, options: dict[str, object]) -> str:
    sent = await fake.send_interaction("say", options)
    found = await fake.wait_for(
        lambda: [f.content for f in fake.followups_to(sent) if f.content and "Said:" in f.content],
        timeout_s=60,
        what="the reply once said",
    )
    return str(found[-1])


def heard_last(fake: FakeDiscord, transcriber: Transcriber) -> str:
    return heard(runs(fake.voice.packets)[-1], transcriber)


async def test_say_in_a_saved_voice_that_is_gone_speaks_in_the_servers_and_says_so(
    fake: FakeDiscord, oyez: OyezBot, transcriber: Transcriber
) -> None:
    await oyez.preferences.set_voice(int(ALICE.id), RETIRED)
    reply = await said(fake, {"text": SENTENCE})
    assert "piper/en_US-joe-medium" in reply
    assert "not in your voice (piper/en_US-retired-medium): unknown voice" in reply
    assert "/voice set chooses another" in reply
    assert word_error_rate(SENTENCE, heard_last(fake, transcriber)) <= 0.2
    assert await oyez.preferences.voice_of(int(ALICE.id)) == RETIRED  # kept: it may come back


async def test_a_server_voice_that_is_gone_too_leaves_the_default_voice(
    fake: FakeDiscord, oyez: OyezBot
) -> None:
    await oyez.preferences.set_voice(int(ALICE.id), RETIRED)
    server = GuildSettings(voice="en_US-old-low", provider="piper")
    await oyez.guild_settings.put(int(GUILD_ID), server)
    reply = await said(fake, {"text": "Hello there."})
    assert "not in your voice (piper/en_US-retired-medium)" in reply
    assert "not in the server's voice (piper/en_US-old-low)" in reply
    assert "piper/en_US-joe-medium" in reply


async def test_a_voice_asked_in_say_is_not_replaced(fake: FakeDiscord, oyez: OyezBot) -> None:
    del oyez
    sent = await fake.send_interaction("say", {"text": "Hello.", "voice": "en_US-retired-medium"})
    response = await fake.wait_for_response(sent)
    assert response.ephemeral
    assert "unknown voice 'en_US-retired-medium'" in str(response.data["content"])
    assert runs(fake.voice.packets) == []


async def test_a_channel_read_aloud_reads_a_member_whose_voice_is_gone(
    fake: FakeDiscord, oyez: OyezBot, transcriber: Transcriber
) -> None:
    await oyez.preferences.set_voice(int(ALICE.id), RETIRED)
    await oyez.guild_settings.put(int(GUILD_ID), GuildSettings(read_channel=int(TEXT_CHANNEL_ID)))
    await fake.send_message(SENTENCE, user=ALICE)
    await fake.wait_for(lambda: runs(fake.voice.packets), timeout_s=60, what="the message read")
    await fake.wait_for(
        lambda: fake.voice.packets[-1].is_silence, timeout_s=30, what="the end of it"
    )
    assert word_error_rate(SENTENCE, heard_last(fake, transcriber)) <= 0.3


async def test_the_voices_are_tried_in_order_each_once(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path / "data", voices={"anna": {"provider": "piper"}})
    base = SpeechRequest(text="Hi.")
    server = GuildSettings(voice="piper|joe|en_US-joe-medium")
    named = list(settings.voices)
    tried = choices(base, VoiceChoice("together", None, "Anna"), server, named)
    assert [(c.what, c.request.provider, c.request.voice) for c in tried] == [
        ("your voice", None, "Anna"),  # a named voice brings its own provider
        ("the server's voice", "piper", "en_US-joe-medium"),
        ("the default voice", None, None),
    ]
    assert {c.request.id for c in tried} == {base.id}  # one request, in another voice
    assert len(choices(base, None, GuildSettings(), named)) == 1
    # a provider left without its key is gone too; the last voice's error is the answer
    pipeline = SpeechPipeline(settings)
    try:
        keyless = choices(base, VoiceChoice("together", "m", "v"), GuildSettings(), named)
        prepared, passed = await prepare_first(pipeline, keyless)
        assert prepared.voice.id == "en_US-joe-medium"
        assert len(passed) == 1
        assert passed[0].startswith("your voice (together/m/v): provider 'together' cannot")
        server_gone = GuildSettings(voice="en_US-old-low", provider="piper")
        with pytest.raises(UnknownVoice):
            await prepare_first(pipeline, choices(base, None, server_gone, named)[:1])
    finally:
        await pipeline.aclose()
