"""``/settings``, ``/setup`` and ``/credits``: the server's managers (Manage Server) only."""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands
from pydantic import ValidationError

from bot.errors import InvalidRequest, validation_problems
from bot.providers.report import credits_report
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.catalogue import VoiceCatalogue, parse_voice
from integrations.discord.commands.voices import MAX_SPEED, MIN_SPEED, check_speed
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.settings import DiscordSettings

__all__ = ["credits_command", "settings_command", "setup_command"]

Command = app_commands.Command[Any, ..., None]

#: Characters of the credits report Discord shows (2000 less the code fence), with room.
REPORT_CHARS = 1900


def _describe_settings(settings: GuildSettings) -> str:
    """What ``/settings`` shows: one line per setting."""
    roles = ", ".join(f"<@&{r}>" for r in settings.paid_roles) or "everyone"
    read_role = f"<@&{settings.read_role}>" if settings.read_role else "everyone"
    return "\n".join(
        [
            f"voice: {settings.voice or 'Oyez default'}",
            f"provider: {settings.provider or 'Oyez default'}",
            f"max length: {settings.max_length or 'Oyez default'}",
            f"paid providers: {roles}",
            f"idle timeout: {settings.idle_timeout_s or 'Oyez default'}",
            f"speed: {f'{settings.speed:g}×' if settings.speed else 'normal'}",
            f'"<name> said": {"on" if settings.name_prefix else "off"} for /say; again after '
            f"{settings.xsaid_gap_s:g} s (xsaid_gap_s)",
            f"voice channel chat read: {'on' if settings.read_voice_chat else 'off'}",
            f"skip prefix: {settings.skip_prefix or 'none'}",
            f"read: {read_role}"
            + (", bots too" if settings.read_bots else "")
            + (", only members in my voice channel" if settings.require_voice else ""),
            f"longest message read: {settings.read_max_s:g} s",
            f"emoji: {settings.emoji}",
            f"repeated letters: at most {settings.repeat_limit} (repeat_limit)",
        ]
    )


def _role_changes(
    current: GuildSettings,
    paid_role: discord.Role | None,
    clear: bool,
    read_role: discord.Role | None,
) -> dict[str, Any]:
    """The paid roles and the reading role asked; @everyone as the reading role: anyone."""
    changes: dict[str, Any] = {}
    if clear:
        changes["paid_roles"] = []
    if paid_role is not None:
        roles = [] if clear else current.paid_roles
        changes["paid_roles"] = sorted({*roles, paid_role.id})
    if read_role is not None:
        changes["read_role"] = None if read_role.is_default() else read_role.id
    return changes


def _plain_changes(options: dict[str, Any]) -> dict[str, Any]:
    """The options given (not None), as stored: a speed of 1 is none, the skip prefix "none"
    is no prefix. Raises :class:`InvalidRequest` for a speed out of range."""
    changes = {name: value for name, value in options.items() if value is not None}
    if "speed" in changes:
        changes["speed"] = None if check_speed(changes["speed"]) == 1 else changes["speed"]
    if "skip_prefix" in changes:
        prefix = changes["skip_prefix"].strip()
        changes["skip_prefix"] = "" if prefix.casefold() == "none" else prefix
    for seconds in ("idle_timeout_s", "xsaid_gap_s", "read_max_s"):
        if seconds in changes:
            changes[seconds] = float(changes[seconds])
    return changes


def _validated(current: GuildSettings, changes: dict[str, Any]) -> GuildSettings:
    """``current`` with ``changes``, checked (Discord checks option ranges, but a client may
    not); raises :class:`InvalidRequest` naming each bad value."""
    try:
        return GuildSettings.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        problems = validation_problems(exc, "settings")
        raise InvalidRequest("Not saved: " + "; ".join(problems)) from None


def credits_command(pipeline: SpeechPipeline) -> Command:
    @app_commands.command(name="credits", description="Provider credits, spend, limits, circuits")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def credits(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        lines = await credits_report(pipeline.registry, pipeline.dispatcher)
        text = "```\n" + "\n".join(lines)[:REPORT_CHARS] + "\n```"
        await interaction.edit_original_response(content=text)

    return credits


def settings_command(
    pipeline: SpeechPipeline, guild_settings: GuildSettingsStore, catalogue: VoiceCatalogue
) -> Command:
    """``/settings``: show the server's settings, or change those given. A voice or provider
    that cannot speak raises the pipeline's :class:`InvalidRequest` (nothing is saved)."""

    @app_commands.command(name="settings", description="This server's settings (no option: show)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(
        voice="Default voice of the server",
        provider="Default provider of the server",
        max_length="Longest /say text, in characters",
        paid_role="Also allow this role to use paid providers",
        clear_paid_roles="Allow everyone to use paid providers again",
        idle_timeout_s="Leave the voice channel after this many idle seconds",
        name_prefix='Say "<name> said" before /say messages (when the speaker changes)',
        voice_chat="Read the text chat of the voice channel I am in",
        speed="Speaking rate of members who set none: 0.5 to 2 (1 is normal)",
        xsaid_gap_s='Say "<name> said" again for the same speaker after this many seconds',
        skip_prefix='Messages starting with this are not read ("none": read all)',
        require_voice="Read only members in the voice channel I am in",
        read_bots="Read messages of bots and webhooks too",
        read_role="Read only members with this role (@everyone: anyone)",
        read_max_s="Longest message read, in seconds of speech",
        emoji="Unicode emoji: say their name, or drop them",
        repeat_limit='A letter repeated more often is said this many times ("soooo": "soo" at 2)',
    )
    async def settings(  # noqa: PLR0913 - the slash command's options
        interaction: discord.Interaction,
        voice: str | None = None,
        provider: str | None = None,
        max_length: app_commands.Range[int, 1, 100_000] | None = None,
        paid_role: discord.Role | None = None,
        clear_paid_roles: bool = False,
        idle_timeout_s: app_commands.Range[int, 10, 86_400] | None = None,
        name_prefix: bool | None = None,
        voice_chat: bool | None = None,
        speed: app_commands.Range[float, MIN_SPEED, MAX_SPEED] | None = None,
        xsaid_gap_s: app_commands.Range[int, 0, 3600] | None = None,
        skip_prefix: app_commands.Range[str, 1, 10] | None = None,
        require_voice: bool | None = None,
        read_bots: bool | None = None,
        read_role: discord.Role | None = None,
        read_max_s: app_commands.Range[int, 5, 120] | None = None,
        emoji: Literal["name", "drop"] | None = None,
        repeat_limit: app_commands.Range[int, 2, 20] | None = None,
    ) -> None:
        assert interaction.guild is not None
        current = await guild_settings.get(interaction.guild.id)
        changes = _plain_changes(
            {
                "max_length": max_length,
                "idle_timeout_s": idle_timeout_s,
                "name_prefix": name_prefix,
                "read_voice_chat": voice_chat,
                "speed": speed,
                "xsaid_gap_s": xsaid_gap_s,
                "skip_prefix": skip_prefix,
                "require_voice": require_voice,
                "read_bots": read_bots,
                "read_max_s": read_max_s,
                "emoji": emoji,
                "repeat_limit": repeat_limit,
            }
        )
        changes |= _role_changes(current, paid_role, clear_paid_roles, read_role)
        if voice is not None or provider is not None:
            chosen_provider, model, chosen_voice = parse_voice(voice, provider)
            await pipeline.prepare(
                SpeechRequest.build(
                    text="voice check", voice=chosen_voice, provider=chosen_provider, model=model
                )
            )
            changes.update(voice=voice, provider=provider)
        updated = _validated(current, changes)
        if changes:
            await guild_settings.put(interaction.guild.id, updated)
        await interaction.response.send_message(
            ("Saved.\n" if changes else "") + _describe_settings(updated), ephemeral=True
        )

    @settings.autocomplete("voice")
    async def voice_choices(
        interaction: discord.Interaction,  # noqa: ARG001 - discord.py's autocomplete signature
        current: str,
    ) -> list[app_commands.Choice[str]]:
        return await catalogue.choices(current)

    return settings


def setup_command(settings: DiscordSettings, guild_settings: GuildSettingsStore) -> Command:
    @app_commands.command(name="setup", description="Read a text channel aloud in voice")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(channel="The text channel to read (none: stop reading)")
    async def setup(
        interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        assert interaction.guild is not None
        current = await guild_settings.get(interaction.guild.id)
        updated = current.model_copy(update={"read_channel": channel.id if channel else None})
        await guild_settings.put(interaction.guild.id, updated)
        if channel is None:
            message = "I no longer read a channel aloud."
        elif not settings.read_messages:
            message = (
                f"Saved {channel.mention}, but reading is off: set discord.read_messages "
                "and enable the message content intent."
            )
        else:
            message = f"I read {channel.mention} aloud in the voice channel I am in."
        await interaction.response.send_message(message, ephemeral=True)

    return setup
