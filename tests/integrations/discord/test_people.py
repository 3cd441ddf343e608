"""How each member is spoken (#17): ``/voice speed``, ``/nick`` and the server's ``/dictionary``,
end to end on the simulated Discord, proven by what is heard (ASR) and what is stored (SQLite),
bad input included: a clear ephemeral reply and nothing stored."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from bot.ops import config
from bot.ops.store import state_path
from integrations.discord.bot import OyezBot
from tests.fakes.discord import ALICE, BOT, GUILD_ID, FakeDiscord, FakeUser
from tests.fakes.discord.client import patched_discord
from tests.fakes.discord.fixtures import oyez_bot_running
from tests.fakes.discord.listening import heard, runs
from tests.support.asr import Transcriber, word_error_rate

BOB = FakeUser("3001", "bob_🎉")
#: Everything but Manage Server (1 << 5).
NO_MANAGE = str(int("2199023255551") & ~(1 << 5))
SENTENCE = "The washing machine has finished its long cycle."


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    voice = {ALICE.id: "2002", BOB.id: "2002"}
    async with FakeDiscord(members=[ALICE, BOB, BOT], voice_states=voice) as server:
        with patched_discord(server):
            yield server


@pytest.fixture
async def oyez(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[OyezBot]:  # noqa: ARG001 - patches discord.py in
    async with oyez_bot_running(config.load(data_dir=tmp_path / "data")) as client:
        yield client


def stored(tmp_path: Path, query: str) -> list[tuple[object, ...]]:
    """Rows of the bot's state file, read apart from the bot."""
    with sqlite3.connect(state_path(tmp_path / "data")) as db:
        return list(db.execute(query).fetchall())


async def answer(fake: FakeDiscord, name: str, options: Mapping[str, object], **kw: object) -> str:
    """The ephemeral reply to ``/name``; fails unless it is ephemeral."""
    sent = await fake.send_interaction(name, options, **kw)  # type: ignore[arg-type]
    response = await fake.wait_for_response(sent)
    assert response.ephemeral, response.data
    return str(response.data["content"])


async def say(fake: FakeDiscord, text: str, user: FakeUser = ALICE) -> str:
    """``/say text``; the edited reply once it has played."""
    sent = await fake.send_interaction("say", {"text": text}, user=user)
    found = await fake.wait_for(
        lambda: [f.content for f in fake.followups_to(sent) if f.content and "Said:" in f.content],
        timeout_s=60,
        what="the reply once said",
    )
    return str(found[-1])


@pytest.mark.usefixtures("oyez")
async def test_voice_speed_is_heard_and_kept(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    await say(fake, SENTENCE)
    assert "1×" in await answer(fake, "voice", {}, subcommand="show")
    saved = await answer(fake, "voice", {"speed": 2.0}, subcommand="speed")
    assert saved == "You now speak at 2× speed."
    assert stored(tmp_path, "SELECT user_id, speed FROM discord_user_speeds") == [
        (int(ALICE.id), 2.0)
    ]
    await say(fake, SENTENCE)
    normal, fast = runs(fake.voice.packets)
    assert len(fast) / len(normal) == pytest.approx(0.5, abs=0.12)
    assert word_error_rate(SENTENCE, heard(fast, transcriber)) <= 0.3
    assert "Speed: 2× (yours)" in await answer(fake, "voice", {}, subcommand="show")

    refused = await answer(fake, "voice", {"speed": 3.5}, subcommand="speed")
    assert refused == "⚠️ A speed of 3.5 is out of range: give 0.5 to 2 (1 is normal)."
    assert stored(tmp_path, "SELECT speed FROM discord_user_speeds") == [(2.0,)]


@pytest.mark.usefixtures("oyez")
async def test_the_servers_speed_is_the_default(fake: FakeDiscord, tmp_path: Path) -> None:
    await say(fake, SENTENCE, user=BOB)
    shown = await answer(fake, "settings", {"speed": 0.5})
    assert "speed: 0.5×" in shown
    assert "Speed: 0.5× (the server's)" in await answer(fake, "voice", {}, subcommand="show")
    await say(fake, SENTENCE, user=BOB)
    normal, slow = runs(fake.voice.packets)
    assert len(slow) / len(normal) == pytest.approx(2.0, rel=0.2)
    refused = await answer(fake, "settings", {"speed": 0.1})
    assert "out of range" in refused
    (row,) = stored(tmp_path, "SELECT settings FROM discord_guild_settings")
    assert '"speed":0.5' in str(row[0])


async def test_a_provider_without_a_rate_option_says_it_ignores_the_speed(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    from bot.providers.base import ProviderRegistry
    from bot.synthesis.pipeline import SpeechPipeline
    from integrations import PROVIDERS
    from integrations.discord.preferences import VoiceChoice
    from integrations.discord.settings import DiscordSettings
    from tests.fakes.discord import client_options, running

    settings = config.load(data_dir=tmp_path / "data")
    registry = ProviderRegistry(
        settings, {**PROVIDERS, "tone": "tests.support.tone_provider:ToneProvider"}
    )
    pipeline = SpeechPipeline(settings, registry)
    client = OyezBot(pipeline, DiscordSettings(), **client_options())
    try:
        async with running(client):
            voice = (await registry.get("tone").list_voices())[0]
            choice = VoiceChoice("tone", voice.model, voice.id)
            await client.preferences.set_voice(int(ALICE.id), choice)
            saved = await answer(fake, "voice", {"speed": 1.5}, subcommand="speed")
            assert "has no speaking rate option: it speaks at its own speed" in saved
            shown = await answer(fake, "voice", {}, subcommand="show")
            assert "Speed: 1.5× (yours)" in shown
            assert "has no speaking rate option" in shown
    finally:
        await pipeline.aclose()


@pytest.mark.usefixtures("oyez")
async def test_nick_is_the_name_said(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    await answer(fake, "settings", {"name_prefix": True, "xsaid_gap_s": 0})  # every time
    assert "Bob said: Hello." in await say(fake, "Hello.", user=BOB)  # 🎉 and _ are not said
    assert await answer(fake, "nick", {"name": "Captain"}, user=BOB) == (
        'I now say your name as "Captain".'
    )
    reply = await say(fake, "The bins go out tonight.", user=BOB)
    assert "Captain said: The bins go out tonight." in reply
    _, named = runs(fake.voice.packets)
    assert word_error_rate("Captain said the bins go out tonight", heard(named, transcriber)) <= 0.3
    await answer(fake, "settings", {"xsaid_gap_s": 60})  # the default: the same speaker, soon
    assert "🔊 Said: And the recycling." in await say(fake, "And the recycling.", user=BOB)

    # a member without Manage Server may not name others; a manager may
    refused = await answer(
        fake, "nick", {"name": "Boss", "member": ALICE}, user=BOB, permissions=NO_MANAGE
    )
    assert refused == "⚠️ Only members who may manage the server can name others."
    too_long = await answer(fake, "nick", {"name": "x" * 33}, user=BOB)
    assert too_long == "⚠️ That name is 33 characters; at most 32 are allowed."
    assert stored(tmp_path, "SELECT guild_id, user_id, nick FROM discord_nicknames") == [
        (int(GUILD_ID), int(BOB.id), "Captain")
    ]
    named_by_manager = await answer(fake, "nick", {"name": "Ally", "member": ALICE}, user=BOB)
    assert named_by_manager == f'I now say <@{ALICE.id}>\'s name as "Ally".'
    assert await answer(fake, "nick", {}, user=BOB) == (
        'I now say your name as "Bob" (from the display name).'
    )
    assert stored(tmp_path, "SELECT user_id, nick FROM discord_nicknames") == [
        (int(ALICE.id), "Ally")
    ]


@pytest.mark.usefixtures("oyez")
async def test_the_dictionary_is_heard_and_never_stale(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    added = await answer(
        fake, "dictionary", {"word": "BRB", "spoken_as": "be right back"}, subcommand="add"
    )
    assert added == 'I now say "brb" as "be right back" on this server.'
    assert "Said: be right back, I will" in await say(fake, "Brb, I will")
    changed = {"word": "brb", "spoken_as": "back in a minute"}
    await answer(fake, "dictionary", changed, subcommand="add")
    assert "Said: back in a minute, I will" in await say(fake, "BRB, I will")
    first, second = runs(fake.voice.packets)
    assert word_error_rate("be right back I will", heard(first, transcriber)) <= 0.3
    assert word_error_rate("back in a minute I will", heard(second, transcriber)) <= 0.3
    assert stored(tmp_path, "SELECT guild_id, word, spoken FROM discord_pronunciations") == [
        (int(GUILD_ID), "brb", "back in a minute")
    ]
    listing = await answer(fake, "dictionary", {}, subcommand="list")
    assert listing == '"brb" → "back in a minute"'

    unknown = await answer(fake, "dictionary", {"word": "lol"}, subcommand="remove")
    assert unknown == "⚠️ 'lol' is not in this server's dictionary (see /dictionary list)."
    long_entry = {"word": "gg", "spoken_as": "good game " * 11}
    too_long = await answer(fake, "dictionary", long_entry, subcommand="add")
    assert too_long == "⚠️ The spoken form is 109 characters; at most 100 are allowed."
    assert len(stored(tmp_path, "SELECT word FROM discord_pronunciations")) == 1
    removed = await answer(fake, "dictionary", {"word": "BRB"}, subcommand="remove")
    assert removed == 'Removed "BRB" (it was said "back in a minute").'
    assert stored(tmp_path, "SELECT word FROM discord_pronunciations") == []
    assert "Said: brb" in await say(fake, "brb")


async def test_the_dictionary_speaks_for_announcements_in_the_server(
    fake: FakeDiscord, oyez: OyezBot, transcriber: Transcriber
) -> None:
    import asyncio

    from bot.announce.announcer import Announcer
    from bot.speech import RequestSource
    from integrations.discord.service import DiscordSink

    await oyez.dictionary.add(int(GUILD_ID), "ETA", "expected arrival")
    announcer = Announcer(oyez.pipeline.settings, oyez.pipeline.prepare)
    announcer.add_sink(DiscordSink(oyez))
    try:
        status = await announcer.announce(
            {"message": "The bus ETA is ten minutes.", "discord": {"guild_id": int(GUILD_ID),
             "channel_id": 2002}},
            RequestSource.HOMEASSISTANT,
        )  # fmt: skip
        await asyncio.wait_for(status.done.wait(), 60)
    finally:
        await announcer.aclose()
    assert status.state.value == "done", status.reason
    (run,) = runs(fake.voice.packets)
    said = heard(run, transcriber)
    assert word_error_rate("The bus expected arrival is ten minutes", said) <= 0.3


async def test_a_scheduled_alert_is_made_ahead_in_the_servers_words(
    fake: FakeDiscord, tmp_path: Path, transcriber: Transcriber
) -> None:
    import asyncio
    import time
    from datetime import UTC, datetime

    from bot.announce.announcer import Announcer
    from bot.schedules.model import Schedule
    from bot.schedules.scheduler import Scheduler
    from bot.schedules.store import ScheduleBook
    from integrations.discord.service import DiscordSink

    settings = config.load(data_dir=tmp_path / "data", cache={"enabled": True})
    async with oyez_bot_running(settings) as client:
        await client.dictionary.add(int(GUILD_ID), "ETA", "expected arrival")
        announcer = Announcer(settings, client.pipeline.prepare)
        announcer.add_sink(DiscordSink(client))
        book = ScheduleBook(settings.data_dir)
        scheduler = Scheduler(settings, announcer, book, synthesize=client.pipeline.speak)
        at = datetime.fromtimestamp(int(time.time()) + 4, UTC)
        channel = {"guild_id": int(GUILD_ID), "channel_id": 2002}
        await book.add(
            Schedule.parse({"name": "bus", "at": at.isoformat(), "discord": channel,
                            "message": "The bus ETA is ten minutes."}),
            "cli",
            datetime.now(UTC),
        )  # fmt: skip
        await scheduler.start()
        task = asyncio.create_task(scheduler.serve())
        try:
            await fake.wait_for(lambda: fake.voice.voice_frames(), timeout_s=15, what="the alert")
            status = announcer.status(f"schedule:bus:{int(at.timestamp())}")
            assert status is not None
            await asyncio.wait_for(status.done.wait(), 30)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await scheduler.stop()
            await announcer.aclose()
            book.close()
    assert status.state.value == "done", status.reason
    assert status.cached is True  # made ahead with the server's dictionary: a cache hit
    (run,) = runs(fake.voice.packets)
    said = heard(run, transcriber)
    assert word_error_rate("The bus expected arrival is ten minutes", said) <= 0.3
