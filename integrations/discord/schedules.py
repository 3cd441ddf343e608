"""``/schedule add|list|remove|pause|resume``: scheduled alerts from Discord (Manage Server).

The schedules are the ones in the SQLite file that ``oyez run``'s scheduler reads; it picks a
change up within a second or so. A server sees and changes only the schedules that speak in
its own voice channels; ``/schedule add`` speaks in the given voice channel, else in the
caller's. Replies are ephemeral.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from bot.errors import InvalidRequest
from bot.ops.config import DiscordChannel
from bot.schedules.model import PLACEHOLDERS, Schedule, check_new, check_speakable
from bot.schedules.store import ScheduleBook, StoredSchedule, UnknownSchedule

if TYPE_CHECKING:
    from integrations.discord.bot import OyezBot

__all__ = ["add_schedule_commands"]

_PLACEHOLDERS = ", ".join("{" + name + "}" for name in PLACEHOLDERS)


@functools.cache
def _zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def _in_guild(stored: StoredSchedule, guild_id: int, named: dict[str, DiscordChannel]) -> bool:
    for target in stored.schedule.discord:
        channel = named.get(target) if isinstance(target, str) else target
        if channel is not None and channel.guild_id == guild_id:
            return True
    return False


def _describe(stored: StoredSchedule, bot: OyezBot) -> str:
    settings = bot.pipeline.settings
    schedule = stored.schedule
    upcoming = stored.next_fire(settings.zone())
    zone = schedule.zone(settings.zone())
    when = f"cron `{schedule.cron}`" if schedule.cron else "once"
    channels = [f"<#{t.channel_id}>" for t in schedule.discord if isinstance(t, DiscordChannel)] + [
        f"`{t}`" for t in schedule.discord if isinstance(t, str)
    ]
    parts = [
        f"**{schedule.name}**",
        stored.state(settings.zone()),
        f"next {discord.utils.format_dt(upcoming, 'F')}" if upcoming else "nothing to come",
        f"{when} ({getattr(zone, 'key', zone)})",
        " ".join(channels),
        f"“{schedule.message[:200]}”",
    ]
    return " · ".join(parts)


def add_schedule_commands(bot: OyezBot) -> None:
    """Register the ``/schedule`` group on ``bot``'s command tree."""
    group = app_commands.Group(
        name="schedule",
        description="Spoken alerts at set times",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def book() -> ScheduleBook:
        return ScheduleBook(bot.pipeline.settings.data_dir)

    async def visible(guild: discord.Guild | None, name: str) -> StoredSchedule:
        """The schedule ``name`` if it speaks in ``guild``; raises :class:`UnknownSchedule`."""
        schedules = book()
        try:
            found = await schedules.get(name)
        finally:
            schedules.close()
        named = bot.pipeline.settings.announce.discord_channels
        if found is None or guild is None or not _in_guild(found, guild.id, named):
            raise UnknownSchedule(name)
        return found

    @group.command(name="add", description="Speak a message at set times in a voice channel")
    @app_commands.describe(
        name="A name for it: letters, digits, . _ -",
        message=f"What to say; may use {_PLACEHOLDERS}",
        cron='When, repeating: five cron fields, e.g. "0 19 * * 2" (Tuesdays 19:00)',
        at="When, once: ISO 8601 with a UTC offset, e.g. 2026-03-03T19:00:00+01:00",
        time_zone="IANA time zone of the cron (default: Oyez's)",
        channel="The voice channel (default: yours)",
        voice="Voice id or name",
        provider="TTS provider",
        priority="high is spoken in quiet hours too",
        catch_up="Speak a missed alert once, late, when Oyez is back",
    )
    async def add(
        interaction: discord.Interaction,
        name: str,
        message: str,
        cron: str | None = None,
        at: str | None = None,
        time_zone: str | None = None,
        channel: discord.VoiceChannel | None = None,
        voice: str | None = None,
        provider: str | None = None,
        priority: Literal["low", "normal", "high"] = "normal",
        catch_up: bool = False,
    ) -> None:
        assert interaction.guild is not None
        member = interaction.user
        if channel is None and isinstance(member, discord.Member) and member.voice:
            current = member.voice.channel
            channel = current if isinstance(current, discord.VoiceChannel) else None
        if channel is None:
            await interaction.response.send_message(
                "⚠️ Give a voice channel, or join one first.", ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        settings = bot.pipeline.settings
        data = {
            "name": name,
            "message": message,
            "cron": cron,
            "at": at,
            "time_zone": time_zone,
            "discord": [{"guild_id": interaction.guild.id, "channel_id": channel.id}],
            "voice": voice,
            "provider": provider,
            "priority": priority,
            "catch_up": catch_up,
        }
        now = datetime.now(UTC)
        schedules = book()
        try:
            schedule = Schedule.parse({k: v for k, v in data.items() if v is not None})
            check_new(schedule, settings, now)
            await check_speakable(schedule, settings, bot.pipeline.prepare, now)
            stored = await schedules.add(schedule, "discord", now)
        except InvalidRequest as exc:
            await interaction.edit_original_response(content=f"⚠️ {exc}")
            return
        finally:
            schedules.close()
        await interaction.edit_original_response(content=f"⏰ Added: {_describe(stored, bot)}")

    @add.autocomplete("time_zone")
    async def zone_choices(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        wanted = current.casefold()
        found = [z for z in _zones() if wanted in z.casefold()][:25]
        return [app_commands.Choice(name=z, value=z) for z in found]

    @group.command(name="list", description="This server's scheduled alerts")
    async def listing(interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        schedules = book()
        try:
            stored = await schedules.all()
        finally:
            schedules.close()
        named = bot.pipeline.settings.announce.discord_channels
        lines = [_describe(s, bot) for s in stored if _in_guild(s, interaction.guild.id, named)]
        text = "\n".join(lines) or "No scheduled alerts on this server."
        await interaction.response.send_message(text[:1990], ephemeral=True)

    async def change(interaction: discord.Interaction, name: str, action: str) -> None:
        try:
            found = await visible(interaction.guild, name)
            schedules = book()
            try:
                if action == "remove":
                    await schedules.remove(found.name)
                    reply = f"Removed **{found.name}**."
                else:
                    stored = await schedules.set_enabled(
                        found.name, action == "resume", datetime.now(UTC)
                    )
                    reply = f"{action.capitalize()}d: {_describe(stored, bot)}"
            finally:
                schedules.close()
        except UnknownSchedule:
            reply = f"⚠️ No schedule named {name!r} on this server (see /schedule list)."
        except InvalidRequest as exc:
            reply = f"⚠️ {exc}"
        await interaction.response.send_message(reply, ephemeral=True)

    @group.command(name="remove", description="Delete a scheduled alert")
    @app_commands.describe(name="The schedule's name")
    async def remove(interaction: discord.Interaction, name: str) -> None:
        await change(interaction, name, "remove")

    @group.command(name="pause", description="Stop a scheduled alert until resumed")
    @app_commands.describe(name="The schedule's name")
    async def pause(interaction: discord.Interaction, name: str) -> None:
        await change(interaction, name, "pause")

    @group.command(name="resume", description="Start a paused alert again")
    @app_commands.describe(name="The schedule's name")
    async def resume(interaction: discord.Interaction, name: str) -> None:
        await change(interaction, name, "resume")

    bot.tree.add_command(group)
