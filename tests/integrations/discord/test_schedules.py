"""Schedules and Discord, against the simulated Discord: an alert is spoken in the voice channel
on time (RTP packets, transcribed), and ``/schedule`` manages this server's alerts."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.announce.announcer import Announcer
from bot.ops import config
from bot.ops.config import DiscordChannel
from bot.ops.store import open_state
from bot.schedules.model import Schedule
from bot.schedules.scheduler import Scheduler
from bot.schedules.store import ScheduleBook
from integrations.discord.bot import OyezBot
from integrations.discord.service import DiscordSink
from tests.fakes.discord import (
    ALICE,
    GUILD_ID,
    LOUNGE_CHANNEL_ID,
    TEXT_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    SentInteraction,
    decode_opus,
    payloads,
)
from tests.fakes.discord.fixtures import fake_discord, oyez_bot_running  # noqa: F401
from tests.support.asr import Transcriber, word_error_rate

CHANNEL = {"guild_id": int(GUILD_ID), "channel_id": int(VOICE_CHANNEL_ID)}


@pytest.fixture
async def oyez_bot(
    fake_discord: FakeDiscord,  # noqa: ARG001, F811 - requested to patch discord.py in
    tmp_path: Path,
) -> AsyncIterator[OyezBot]:
    settings = config.load(data_dir=tmp_path / "data", cache={"enabled": True})
    async with oyez_bot_running(settings) as client:
        yield client


async def test_an_alert_is_spoken_in_the_voice_channel_on_time(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,
    transcriber: Transcriber,
) -> None:
    pipeline = oyez_bot.pipeline
    settings = pipeline.settings
    announcer = Announcer(settings, pipeline.prepare)
    announcer.add_sink(DiscordSink(oyez_bot))
    book = ScheduleBook(settings.data_dir)
    scheduler = Scheduler(settings, announcer, book, synthesize=pipeline.speak)
    at = datetime.fromtimestamp(int(time.time()) + 4, UTC)
    at_monotonic = time.monotonic() + (at.timestamp() - time.time())
    await book.add(
        Schedule.parse(
            {"name": "tea", "at": at.isoformat(), "discord": CHANNEL,
             "message": "The tea is ready. It is {weekday}."}
        ),
        "cli",
        datetime.now(UTC),
    )  # fmt: skip
    await scheduler.start()
    task = asyncio.create_task(scheduler.serve())
    try:
        packets = await fake_discord.wait_for(
            lambda: fake_discord.voice.voice_frames(), timeout_s=15, what="the alert's audio"
        )
        start_error = packets[0].time - at_monotonic
        status = announcer.status(f"schedule:tea:{int(at.timestamp())}")
        assert status is not None
        await asyncio.wait_for(status.done.wait(), 30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await scheduler.stop()
        await announcer.aclose()
    assert status.state.value == "done", status.reason
    assert status.cached is True  # synthesized ahead: the alert played from the cache
    # joining the channel included; -0.05: the alert's instant and this test's monotonic
    # reckoning of it are read from the wall clock a moment apart (a run measured -2 ms)
    assert -0.05 <= start_error < 1.0, start_error
    weekday = at.astimezone(settings.zone()).strftime("%A")
    frames = fake_discord.voice.voice_frames()
    pcm = decode_opus([p.opus for p in frames])
    heard = transcriber.transcribe_samples(pcm.mean(axis=1)[::3])
    assert word_error_rate(f"The tea is ready. It is {weekday}.", heard) <= 0.2
    (join,) = [d for d in fake_discord.voice_state_updates() if d["channel_id"]]
    assert str(join["channel_id"]) == VOICE_CHANNEL_ID


async def schedule_command(
    fake: FakeDiscord, action: str, options: dict[str, Any] | None = None
) -> SentInteraction:
    """Dispatch ``/schedule ACTION`` (a subcommand, which the fake's send_interaction does
    not build) as ALICE, from the text channel."""
    await fake.wait_identified()
    guild, command = next(
        (g, c) for g, commands in fake.commands.items() for c in commands
        if c["name"] == "schedule"
    )  # fmt: skip
    values = options or {}
    nested = [
        {
            "name": action,
            "type": 1,
            "options": [
                {"name": k, "type": payloads.option_type(v), "value": getattr(v, "id", v)}
                for k, v in values.items()
            ],
        }
    ]
    interaction_id, token = fake.snowflake(), "tok-" + secrets.token_hex(8)
    payload = payloads.interaction_create(
        interaction_id=interaction_id,
        token=token,
        command_id=command["id"],
        name="schedule",
        options=nested,
        user=ALICE,
        channel_id=TEXT_CHANNEL_ID,
        command_guild_id=guild,
        resolved_data=payloads.resolved(list(values.values())),
    )
    sent = SentInteraction(interaction_id, token, "schedule", payload, time.monotonic())
    fake.interactions.append(sent)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return sent


async def reply(fake: FakeDiscord, sent: SentInteraction) -> str:
    """The content of the answer: the message, or the edit of a deferred one."""
    first = await fake.wait_for_response(sent)
    assert first.ephemeral
    if first.type == 4:
        return str(first.data["content"])
    found = await fake.wait_for(
        lambda: [f.content for f in fake.followups_to(sent) if f.content],
        timeout_s=15,
        what="the edited reply",
    )
    return str(found[-1])


async def stored(bot: OyezBot) -> dict[str, Schedule]:
    book = ScheduleBook(bot.pipeline.settings.data_dir)
    try:
        return {s.name: s.schedule for s in await book.all()}
    finally:
        book.close()


async def test_schedule_commands_manage_this_servers_alerts(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,
) -> None:
    (synced,) = [c for cs in fake_discord.commands.values() for c in cs if c["name"] == "schedule"]
    assert int(synced["default_member_permissions"]) == 1 << 5  # Manage Server
    assert {o["name"] for o in synced["options"]} == {"add", "list", "remove", "pause", "resume"}

    sent = await schedule_command(
        fake_discord,
        "add",
        {"name": "raid", "message": "Raid in five minutes!", "cron": "55 20 * * 5",
         "time_zone": "Europe/Paris"},
    )  # fmt: skip
    answer = await reply(fake_discord, sent)
    assert answer.startswith("⏰ Added: **raid**"), answer
    assert f"<#{VOICE_CHANNEL_ID}>" in answer  # ALICE's voice channel
    raid = (await stored(oyez_bot))["raid"]
    assert raid.discord == [DiscordChannel(**CHANNEL)]
    assert (raid.cron, raid.time_zone) == ("55 20 * * 5", "Europe/Paris")

    lounge = payloads.ChannelRef(LOUNGE_CHANNEL_ID)
    sent = await schedule_command(
        fake_discord,
        "add",
        {"name": "oven", "message": "Oven!", "at": "2099-01-01T12:00:00+00:00", "channel": lounge,
         "speed": 1.5},
    )  # fmt: skip
    assert "⏰ Added: **oven**" in await reply(fake_discord, sent)
    oven = (await stored(oyez_bot))["oven"]
    assert oven.discord == [
        DiscordChannel(guild_id=int(GUILD_ID), channel_id=int(LOUNGE_CHANNEL_ID))
    ]
    assert (oven.speed, raid.speed) == (1.5, None)
    # another server's schedule is not shown here, nor changeable from here
    book = ScheduleBook(oyez_bot.pipeline.settings.data_dir)
    await book.add(
        Schedule.parse({"name": "elsewhere", "cron": "0 9 * * *", "message": "Hi.",
                        "discord": "999/888"}),
        "cli",
        datetime.now(UTC),
    )  # fmt: skip
    book.close()

    listing = await reply(fake_discord, await schedule_command(fake_discord, "list"))
    lines = listing.splitlines()
    assert [line.split("**")[1] for line in lines] == ["oven", "raid"]
    assert "<t:" in lines[1]  # the next fire time, shown in each reader's own zone

    answer = await reply(
        fake_discord, await schedule_command(fake_discord, "pause", {"name": "raid"})
    )
    assert answer.startswith("Paused: **raid** · paused")
    assert (await stored(oyez_bot))["raid"].enabled is False
    answer = await reply(
        fake_discord, await schedule_command(fake_discord, "resume", {"name": "raid"})
    )
    assert answer.startswith("Resumed: **raid** · active")
    answer = await reply(
        fake_discord, await schedule_command(fake_discord, "remove", {"name": "raid"})
    )
    assert answer == "Removed **raid**."
    answer = await reply(
        fake_discord, await schedule_command(fake_discord, "remove", {"name": "elsewhere"})
    )
    assert "No schedule named 'elsewhere' on this server" in answer
    assert set(await stored(oyez_bot)) == {"oven", "elsewhere"}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"cron": "0 25 * * *"}, "cron: '0 25 * * *' is not a valid cron expression"),
        ({"cron": "0 9 * * *", "time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"at": "2020-01-01T00:00:00+00:00"}, "is in the past"),
        ({"cron": "0 9 * * *", "message": "{weekday.upper}"}, "attribute access"),
        ({"cron": "0 9 * * *", "voice": "nobody"}, "unknown voice 'nobody'"),
        ({"message": "no time given"}, "either cron"),
    ],
)
async def test_schedule_add_explains_what_is_wrong(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,
    options: dict[str, str],
    problem: str,
) -> None:
    sent = await schedule_command(
        fake_discord, "add", {"name": "bad", "message": "Hello.", **options}
    )
    answer = await reply(fake_discord, sent)
    assert answer.startswith("⚠️") and problem in answer, answer
    assert await stored(oyez_bot) == {}
    assert isinstance(oyez_bot.get_channel(int(VOICE_CHANNEL_ID)), discord.VoiceChannel)


async def test_a_busy_schedule_file_does_not_stall_the_bot(
    fake_discord: FakeDiscord,  # noqa: F811
    oyez_bot: OyezBot,
) -> None:
    data_dir = oyez_bot.pipeline.settings.data_dir
    book = ScheduleBook(data_dir)
    raid = {"name": "raid", "cron": "55 20 * * 5", "message": "Raid!", "discord": CHANNEL}
    await book.add(Schedule.parse(raid), "cli", datetime.now(UTC))
    book.close()
    other = open_state(data_dir, "")
    other.execute("BEGIN IMMEDIATE")  # what `oyez schedule add` in another process holds
    try:
        pausing = await schedule_command(fake_discord, "pause", {"name": "raid"})
        await asyncio.sleep(0.3)  # the pause now waits for the file
        queue = await fake_discord.send_interaction("queue", {}, user=ALICE)
        answered = await fake_discord.wait_for_response(queue)
        assert answered.data["content"] == "The queue is empty."
    finally:
        other.execute("COMMIT")
        other.close()
    paused = await fake_discord.wait_for_response(pausing)
    assert answered.time < paused.time  # /queue was answered while the pause waited
    assert paused.data["content"].startswith("Paused: **raid**")
