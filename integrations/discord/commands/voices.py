"""``/voice set|speed|show`` (the voice a member speaks with, and how fast) and ``/voices``
(what there is)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.errors import ConfigError, InvalidRequest
from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.catalogue import VoiceCatalogue, parse_voice
from integrations.discord.guilds import GuildSettingsStore
from integrations.discord.preferences import Preferences, VoiceChoice

__all__ = ["MAX_SPEED", "MIN_SPEED", "VoiceCommands", "check_speed", "voices_command"]

#: The speaking rates ``/voice speed`` and ``/settings speed`` take (1.0 normal).
MIN_SPEED, MAX_SPEED = 0.5, 2.0


def check_speed(speed: float) -> float:
    """``speed`` if within :data:`MIN_SPEED`..:data:`MAX_SPEED`; raises :class:`InvalidRequest`
    naming the range otherwise (Discord enforces it too, but a client may not)."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidRequest(
            f"A speed of {speed:g} is out of range: give {MIN_SPEED:g} to {MAX_SPEED:g} "
            "(1 is normal)."
        )
    return speed


#: Characters of a reply Discord takes (2000), with room to spare.
REPLY_CHARS = 1990
#: The last line of a ``/voices`` listing cut to fit.
MORE = "… and {} more: narrow it with search:"


class VoiceCommands(app_commands.Group, name="voice", description="Your voice", guild_only=True):
    """``/voice set`` (autocomplete across providers), ``/voice speed`` and ``/voice show``."""

    def __init__(
        self,
        pipeline: SpeechPipeline,
        preferences: Preferences,
        catalogue: VoiceCatalogue,
        guild_settings: GuildSettingsStore,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.preferences = preferences
        self.catalogue = catalogue
        self.guild_settings = guild_settings

    @app_commands.command(name="set", description="Choose the voice you speak with")
    @app_commands.describe(voice="Start typing: voices of every provider")
    async def set_voice(self, interaction: discord.Interaction, voice: str) -> None:
        """Raises the pipeline's :class:`InvalidRequest` for a voice it cannot speak with."""
        provider, model, voice_id = parse_voice(voice, None)
        prepared = await self.pipeline.prepare(
            SpeechRequest.build(text="voice check", provider=provider, model=model, voice=voice_id)
        )
        if voice.casefold() in self.pipeline.settings.voices:
            choice = VoiceChoice(prepared.provider.name, None, voice)
        else:
            v = prepared.voice
            choice = VoiceChoice(v.provider, v.model, v.id)
        await self.preferences.set_voice(interaction.user.id, choice)
        await interaction.response.send_message(
            f"You now speak with {prepared.voice.name} ({prepared.voice.label}).", ephemeral=True
        )

    @set_voice.autocomplete("voice")
    async def voice_choices(
        self,
        interaction: discord.Interaction,  # noqa: ARG002 - discord.py's autocomplete signature
        current: str,
    ) -> list[app_commands.Choice[str]]:
        return await self.catalogue.choices(current)

    @app_commands.command(name="speed", description="How fast you speak (1 is normal)")
    @app_commands.describe(speed="0.5 (half as fast) to 2 (twice as fast); none: the server's")
    async def set_speed(
        self,
        interaction: discord.Interaction,
        speed: app_commands.Range[float, MIN_SPEED, MAX_SPEED] | None = None,
    ) -> None:
        """Raises :class:`InvalidRequest` for a speed out of range (nothing is stored)."""
        if speed is not None:
            check_speed(speed)
        await self.preferences.set_speed(interaction.user.id, speed)
        message = (
            "You speak at the server's speed again."
            if speed is None
            else f"You now speak at {speed:g}× speed."
        )
        note = await self._ignored_note(interaction, speed)
        await interaction.response.send_message(message + note, ephemeral=True)

    @app_commands.command(name="show", description="The voice you speak with, and how fast")
    async def show_voice(self, interaction: discord.Interaction) -> None:
        choice = await self.preferences.voice_of(interaction.user.id)
        if choice is None:
            message = "You speak with the server's default voice; choose one with /voice set."
        else:
            message = f"You speak with {choice.label}."
        speed = await self.preferences.speed_of(interaction.user.id)
        if speed is not None:
            message += f"\nSpeed: {speed:g}× (yours)."
        else:
            server = await self.guild_settings.get(interaction.guild_id or 0)
            shown = f"{server.speed:g}× (the server's)" if server.speed else "1× (normal)"
            message += f"\nSpeed: {shown}; set yours with /voice speed."
        message += await self._ignored_note(interaction, speed)
        await interaction.response.send_message(message, ephemeral=True)

    async def _ignored_note(self, interaction: discord.Interaction, speed: float | None) -> str:
        """A line saying the caller's voice has no rate option, when a speed would be ignored."""
        if speed is None:
            server = await self.guild_settings.get(interaction.guild_id or 0)
            speed = server.speed
        if speed is None or speed == 1:
            return ""
        choice = await self.preferences.voice_of(interaction.user.id)
        server = await self.guild_settings.get(interaction.guild_id or 0)
        provider: str | None
        voice: str | None
        if choice is not None:
            provider, model, voice = choice.provider, choice.model, choice.voice
            if voice.casefold() in self.pipeline.settings.voices:
                provider = None  # a named voice brings its own provider
        else:
            provider, model, voice = parse_voice(server.voice, server.provider)
        try:
            prepared = await self.pipeline.prepare(
                SpeechRequest.build(text="speed check", provider=provider, model=model, voice=voice)
            )
        except (InvalidRequest, ConfigError):
            return ""
        if prepared.provider.rate_options(prepared.voice, speed) is not None:
            return ""
        return (
            f"\n-# {prepared.voice.label} has no speaking rate option: it speaks at its own speed."
        )


def voices_command(catalogue: VoiceCatalogue) -> app_commands.Command[Any, ..., None]:
    @app_commands.command(name="voices", description="The voices you can use")
    @app_commands.describe(
        provider="Only this provider's voices",
        search="Only voices whose name, model or language has this (en-GB, Neural2, bella…)",
    )
    async def voices(
        interaction: discord.Interaction, provider: str | None = None, search: str | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        wanted = (search or "").casefold().strip()
        found = [v for v in await catalogue.voices(provider) if v.matches(wanted)]
        lines = [f"`{v.id}` — {v.name} ({v.provider}/{v.model})" for v in found]
        named = [
            f"`{n}` — {nv.description or 'named voice'} ({nv.provider})"
            for n, nv in catalogue.named_voices()
            if provider is None and wanted in n
        ]
        await interaction.edit_original_response(content=listing(named + lines, search))

    return voices


def listing(lines: list[str], search: str | None) -> str:
    """As many whole ``lines`` as fit in one reply, then how many were left out and how to
    narrow the list (a provider such as Google has hundreds of voices)."""
    if not lines:
        return f"No voices match {search!r}." if search else "No voices found."
    whole = "\n".join(lines)
    if len(whole) <= REPLY_CHARS:
        return whole
    room = REPLY_CHARS - len(MORE.format(len(lines))) - 1
    shown: list[str] = []
    for line in lines:
        room -= len(line) + 1
        if room < 0:
            break
        shown.append(line)
    return "\n".join([*shown, MORE.format(len(lines) - len(shown))])
