"""``/voice set|show`` (the voice a member speaks with) and ``/voices`` (what there is)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.speech import SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.catalogue import VoiceCatalogue, parse_voice
from integrations.discord.preferences import Preferences, VoiceChoice

__all__ = ["VoiceCommands", "voices_command"]

#: Characters of a reply Discord takes (2000), with room to spare.
REPLY_CHARS = 1990


class VoiceCommands(app_commands.Group, name="voice", description="Your voice", guild_only=True):
    """``/voice set`` (autocomplete across providers) and ``/voice show``."""

    def __init__(
        self, pipeline: SpeechPipeline, preferences: Preferences, catalogue: VoiceCatalogue
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.preferences = preferences
        self.catalogue = catalogue

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

    @app_commands.command(name="show", description="The voice you speak with")
    async def show_voice(self, interaction: discord.Interaction) -> None:
        choice = await self.preferences.voice_of(interaction.user.id)
        if choice is None:
            message = "You speak with the server's default voice; choose one with /voice set."
        else:
            message = f"You speak with {choice.label}."
        await interaction.response.send_message(message, ephemeral=True)


def voices_command(catalogue: VoiceCatalogue) -> app_commands.Command[Any, ..., None]:
    @app_commands.command(name="voices", description="The voices you can use")
    @app_commands.describe(provider="Only this provider's voices")
    async def voices(interaction: discord.Interaction, provider: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await catalogue.voices(provider)
        lines = [f"`{v.id}` — {v.name} ({v.provider}/{v.model})" for v in found]
        named = [f"`{n}` — named voice ({nv.provider})" for n, nv in catalogue.named_voices()]
        text = "\n".join(named + lines) or "No voices found."
        await interaction.edit_original_response(content=text[:REPLY_CHARS])

    return voices
