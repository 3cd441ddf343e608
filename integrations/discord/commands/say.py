"""``/say text [voice] [provider]``: speak in the caller's voice channel.

Bad input is answered first, privately (within :data:`PREPARE_BUDGET_S`, else after a defer);
the reply is then edited to say what was said, by which voice, and why another voice spoke
when the asked one could not. The voice is the one asked, else the caller's (``/voice set``),
else the server's (``/settings``); the speed the caller's (``/voice speed``), else the server's;
"<name> said" (``/settings name_prefix``) says the caller's ``/nick``, when the speaker
changed or after ``/settings xsaid_gap_s``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import discord
from discord import app_commands

from bot.errors import InvalidRequest
from bot.ops.logs import mask_secrets
from bot.speech import RequestSource, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import PreparedRequest
from integrations.discord.arrival import Arrival, ArrivalOrder, arrival_of
from integrations.discord.catalogue import parse_voice
from integrations.discord.commands.errors import PaidProviderRefused, fit
from integrations.discord.commands.playback import caller_channel
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.names import SpeakerTurns, spoken_name
from integrations.discord.player import QueuedItem, Skipped
from integrations.discord.preferences import Preferences
from integrations.discord.saved_voice import Choice, choices, prepare_first
from integrations.discord.voice import VoiceConnections

__all__ = ["PREPARE_BUDGET_S", "Say", "check_paid_roles", "say_command"]

#: Seconds /say may spend validating before it must defer (Discord allows 3 s in all).
PREPARE_BUDGET_S = 1.5


def _reply(utterance: Utterance, passed: list[str] | None = None) -> str:
    """The edited reply once ``utterance`` has played; ``passed``: the saved voices that were
    gone (:func:`~integrations.discord.saved_voice.prepare_first`)."""
    lines = [
        f"🔊 Said: {utterance.text}",
        f"-# {utterance.voice.label} · {utterance.duration_s:.1f} s",
    ]
    if utterance.cached:
        lines[-1] += " · from the cache"
    for gone in passed or ():
        lines.append(f"-# not in {gone} (/voice set chooses another)")
    for note in utterance.fallbacks:
        lines.append(f"-# instead of {note.provider}: {note.reason}")
    return fit(mask_secrets("\n".join(lines)))


def check_paid_roles(
    prepared: PreparedRequest, member: discord.User | discord.Member, server: GuildSettings
) -> None:
    """Raises :class:`PaidProviderRefused` when ``prepared`` needs a paid provider and the
    server keeps those to roles ``member`` has none of."""
    if prepared.provider.paid and server.paid_roles:
        roles = {role.id for role in getattr(member, "roles", [])}
        if not roles & set(server.paid_roles):
            raise PaidProviderRefused(prepared.provider.name)


class Say:
    """What ``/say`` does; :meth:`played` edits the reply of a request once it has played."""

    def __init__(
        self,
        pipeline: SpeechPipeline,
        guild_settings: GuildSettingsStore,
        preferences: Preferences,
        voice: VoiceConnections,
        turns: SpeakerTurns,
    ) -> None:
        self.pipeline = pipeline
        self.guild_settings = guild_settings
        self.preferences = preferences
        self.voice = voice
        self.turns = turns
        self.arrival = ArrivalOrder()
        self._interactions: dict[str, discord.Interaction] = {}  # by request id
        self._passed: dict[str, list[str]] = {}  # by request id: voices that were gone

    async def __call__(
        self, interaction: discord.Interaction, text: str, voice: str | None, provider: str | None
    ) -> None:
        """Queue ``text``; raises :class:`InvalidRequest`/:class:`PaidProviderRefused`."""
        arrived = arrival_of(interaction)
        with self.arrival.on_the_way(interaction.guild_id or 0, arrived):
            await self._say(interaction, text, voice, provider, arrived)

    async def played(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        interaction = self._interactions.pop(item.request.id, None)
        passed = self._passed.pop(item.request.id, [])
        if interaction is None:
            return
        if utterance is not None and error is None:
            await interaction.edit_original_response(content=_reply(utterance, passed))
        else:
            mark = "⏭️" if isinstance(error, Skipped) else "⚠️"  # a member's choice, not a fault
            await interaction.edit_original_response(
                content=fit(mask_secrets(f"{mark} Not said: {error}"))
            )

    async def _say(
        self,
        interaction: discord.Interaction,
        text: str,
        voice: str | None,
        provider: str | None,
        arrived: Arrival,
    ) -> None:
        channel = await caller_channel(interaction, self.voice)
        if channel is None or interaction.guild is None:
            return
        server = await self.guild_settings.get(interaction.guild.id)
        if server.max_length is not None and len(text) > server.max_length:
            raise InvalidRequest(
                f"That is {len(text)} characters; this server allows {server.max_length}."
            )
        prepared, passed = await self._prepare(
            interaction, await self._request(interaction, server, text, voice, provider)
        )
        check_paid_roles(prepared, interaction.user, server)
        request = prepared.request
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        await self.arrival.wait_turn(interaction.guild.id, arrived)
        try:
            player = await self.voice.player(interaction.guild, channel)
        except (discord.DiscordException, TimeoutError) as exc:
            await interaction.edit_original_response(
                content=fit(mask_secrets(f"⚠️ Cannot join voice: {exc}"))
            )
            return
        self._interactions[request.id] = interaction
        if passed:
            self._passed[request.id] = passed
        position = player.enqueue(prepared, label=interaction.user.display_name, arrived=arrived)
        if position:
            await interaction.edit_original_response(
                content=fit(f"⏳ Queued ({position} before it): {request.text}")
            )

    async def _request(
        self,
        interaction: discord.Interaction,
        server: GuildSettings,
        text: str,
        voice: str | None,
        provider: str | None,
    ) -> list[Choice]:
        """The request of ``text`` in the voice asked, else in the caller's, else in the
        server's, else in the default voice: the voices to try, in order (one that is gone
        passes it on, :mod:`integrations.discord.saved_voice`; one asked is not replaced)."""
        user = interaction.user
        guild_id = interaction.guild_id or 0
        if server.name_prefix and self.turns.name_due(guild_id, user.id, server.xsaid_gap_s):
            text = f"{await spoken_name(user, guild_id, self.preferences)} said: {text}"
        base = SpeechRequest.build(
            text=text,
            source=RequestSource.DISCORD,
            requester=f"discord:{user.id}",
            guild=str(interaction.guild_id),
            speed=await self.preferences.speed_of(user.id) or server.speed,
        )
        named = list(self.pipeline.settings.voices)
        if voice is None and provider is None:
            return choices(base, await self.preferences.voice_of(user.id), server, named)
        chosen = await self.preferences.voice_of(user.id) if voice is None else None
        model = None
        if chosen is not None and provider == chosen.provider:
            return choices(base, chosen, server, named)[:1]
        if voice is None and provider == server.provider:
            provider, model, voice = parse_voice(server.voice, provider)
        asked = {"provider": provider, "model": model, "voice": voice}
        return [Choice("the voice asked", base.model_copy(update=asked))]

    async def _prepare(
        self, interaction: discord.Interaction, candidates: list[Choice]
    ) -> tuple[PreparedRequest, list[str]]:
        """The first of ``candidates`` whose voice is there, prepared, once, and the voices
        passed over (for the reply); the reply is deferred first when that takes over
        :data:`PREPARE_BUDGET_S` (a cloud provider's voice list may take a while to fetch)."""
        preparing = asyncio.ensure_future(prepare_first(self.pipeline, candidates))
        try:
            done, _ = await asyncio.wait({preparing}, timeout=PREPARE_BUDGET_S)
            if not done:
                await interaction.response.defer(thinking=True)
            return await preparing
        finally:
            preparing.cancel()  # a no-op once finished; else the defer failed or we were cancelled


def say_command(say: Say, name: str = "say") -> app_commands.Command[Any, ..., None]:
    """``/say`` (or the same command under ``name``: ``/tts``, as other TTS bots call it)."""

    @app_commands.command(name=name, description="Speak in your voice channel")
    @app_commands.describe(
        text="What to say", voice="A voice (see /voices)", provider="A TTS provider"
    )
    @app_commands.guild_only()
    async def command(
        interaction: discord.Interaction,
        text: str,
        voice: str | None = None,
        provider: str | None = None,
    ) -> None:
        await say(interaction, text, voice, provider)

    return command
