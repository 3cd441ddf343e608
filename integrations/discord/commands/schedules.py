"""``/schedule add|list|remove|pause|resume``: scheduled alerts from Discord (Manage Server).

The schedules are the ones in the SQLite file that ``oyez run``'s scheduler reads; it picks a
change up within a second or so. A server sees and changes only the schedules that speak in
its own voice channels; ``/schedule add`` speaks in the given voice channel, else in the
caller's. Replies are ephemeral.
"""

from __future__ import annotations

import contextlib
import functools
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

import discord
from discord import app_commands

from bot.errors import InvalidRequest
from bot.ops.config import DiscordChannel, Settings
from bot.schedules.model import PLACEHOLDERS, Schedule, check_new, check_speakable
from bot.schedules.store import ScheduleBook, StoredSchedule, UnknownSchedule
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.commands.errors import fit

__all__ = ["ScheduleCommands"]

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


@contextlib.contextmanager
def _known(name: str) -> Iterator[None]:
    """Raises :class:`InvalidRequest` for a schedule ``name`` unknown on this server."""
    try:
        yield
    except UnknownSchedule:
        raise InvalidRequest(
            f"No schedule named {name!r} on this server (see /schedule list)."
        ) from None


def _describe(stored: StoredSchedule, settings: Settings) -> str:
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


class ScheduleCommands(
    app_commands.Group,
    name="schedule",
    description="Spoken alerts at set times",
    guild_only=True,
    default_permissions=discord.Permissions(manage_guild=True),
):
    """The ``/schedule`` group over ``book`` (its SQLite work runs in a worker thread).

    Our errors (a bad schedule, an unknown name) are raised as :class:`InvalidRequest`."""

    def __init__(self, pipeline: SpeechPipeline, book: ScheduleBook) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.book = book

    @property
    def settings(self) -> Settings:
        return self.pipeline.settings

    @app_commands.command(name="add", description="Speak a message at set times in a voice channel")
    @app_commands.describe(
        name="A name for it: letters, digits, . _ -",
        message=f"What to say; may use {_PLACEHOLDERS}",
        cron='When, repeating: five cron fields, e.g. "0 19 * * 2" (Tuesdays 19:00)',
        at="When, once: ISO 8601 with a UTC offset, e.g. 2026-03-03T19:00:00+01:00",
        time_zone="IANA time zone of the cron (default: Oyez's)",
        channel="The voice or stage channel (default: yours)",
        voice="Voice id or name",
        provider="TTS provider",
        priority="high is spoken in quiet hours too",
        catch_up="Speak a missed alert once, late, when Oyez is back",
        speed="How fast, 0.5 to 2 (1 is normal; default: the voice's own)",
    )
    async def add(  # noqa: PLR0913 - the slash command's options
        self,
        interaction: discord.Interaction,
        name: str,
        message: str,
        cron: str | None = None,
        at: str | None = None,
        time_zone: str | None = None,
        channel: discord.VoiceChannel | discord.StageChannel | None = None,
        voice: str | None = None,
        provider: str | None = None,
        priority: Literal["low", "normal", "high"] = "normal",
        catch_up: bool = False,
        speed: app_commands.Range[float, 0.5, 2.0] | None = None,
    ) -> None:
        assert interaction.guild is not None
        member = interaction.user
        if channel is None and isinstance(member, discord.Member) and member.voice:
            current = member.voice.channel
            channel = (
                current
                if isinstance(current, discord.VoiceChannel | discord.StageChannel)
                else None
            )
        if channel is None:
            raise InvalidRequest("Give a voice channel, or join one first.")
        await interaction.response.defer(ephemeral=True, thinking=True)
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
            "speed": speed,
        }
        now = datetime.now(UTC)
        schedule = Schedule.parse({k: v for k, v in data.items() if v is not None})
        check_new(schedule, self.settings, now)
        await check_speakable(schedule, self.settings, self.pipeline.prepare, now)
        stored = await self.book.add(schedule, "discord", now)
        described = _describe(stored, self.settings)
        await interaction.edit_original_response(content=fit(f"⏰ Added: {described}"))

    @add.autocomplete("time_zone")
    async def zone_choices(
        self,
        interaction: discord.Interaction,  # noqa: ARG002 - discord.py's autocomplete signature
        current: str,
    ) -> list[app_commands.Choice[str]]:
        wanted = current.casefold()
        found = [z for z in _zones() if wanted in z.casefold()][:25]
        return [app_commands.Choice(name=z, value=z) for z in found]

    @app_commands.command(name="list", description="This server's scheduled alerts")
    async def listing(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        stored = await self.book.all()
        named = self.settings.announce.discord_channels
        guild_id = interaction.guild.id
        lines = [_describe(s, self.settings) for s in stored if _in_guild(s, guild_id, named)]
        text = "\n".join(lines) or "No scheduled alerts on this server."
        await interaction.response.send_message(fit(text), ephemeral=True)

    @app_commands.command(name="remove", description="Delete a scheduled alert")
    @app_commands.describe(name="The schedule's name")
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        with _known(name):
            found = await self._visible(interaction.guild, name)
            await self.book.remove(found.name)
        await interaction.response.send_message(fit(f"Removed **{found.name}**."), ephemeral=True)

    @app_commands.command(name="pause", description="Stop a scheduled alert until resumed")
    @app_commands.describe(name="The schedule's name")
    async def pause(self, interaction: discord.Interaction, name: str) -> None:
        await self._set_enabled(interaction, name, False)

    @app_commands.command(name="resume", description="Start a paused alert again")
    @app_commands.describe(name="The schedule's name")
    async def resume(self, interaction: discord.Interaction, name: str) -> None:
        await self._set_enabled(interaction, name, True)

    async def _set_enabled(self, interaction: discord.Interaction, name: str, on: bool) -> None:
        with _known(name):
            found = await self._visible(interaction.guild, name)
            now = datetime.now(UTC)
            stored = await self.book.set_enabled(found.name, on, now)
        done = "Resumed" if on else "Paused"
        described = _describe(stored, self.settings)
        await interaction.response.send_message(fit(f"{done}: {described}"), ephemeral=True)

    async def _visible(self, guild: discord.Guild | None, name: str) -> StoredSchedule:
        """The schedule ``name`` if it speaks in ``guild``; raises :class:`UnknownSchedule`."""
        found = await self.book.get(name)
        named = self.settings.announce.discord_channels
        if found is None or guild is None or not _in_guild(found, guild.id, named):
            raise UnknownSchedule(name)
        return found
