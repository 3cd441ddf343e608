"""``/join``, ``/leave``, ``/skip``, ``/stop``, ``/queue`` and ``/history``: the guild's voice,
its queue and what it said."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

import discord
from discord import app_commands

from integrations.discord.voice import VocalChannel, VoiceConnections

__all__ = ["caller_channel", "playback_commands"]

_Command = TypeVar("_Command", bound=Callable[..., Coroutine[Any, Any, None]])

#: Characters of each text ``/queue`` shows.
QUEUE_TEXT_CHARS = 80


async def caller_channel(
    interaction: discord.Interaction, voice: VoiceConnections
) -> VocalChannel | None:
    """The caller's voice or stage channel, or None after telling them (ephemerally) why
    not."""
    member = interaction.user
    channel = member.voice.channel if isinstance(member, discord.Member) and member.voice else None
    if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
        await interaction.response.send_message(
            "Join a voice channel first, then ask again.", ephemeral=True
        )
        return None
    busy = voice.busy_elsewhere(interaction.guild, channel) if interaction.guild else None
    if busy is not None:
        await interaction.response.send_message(
            f"I am speaking in {busy.mention} right now; join it, or ask again when I am done.",
            ephemeral=True,
        )
        return None
    return channel


def _per_server(interaction: discord.Interaction) -> int:
    return interaction.guild_id or 0


def _per_member(interaction: discord.Interaction) -> tuple[int, int]:
    return interaction.guild_id or 0, interaction.user.id


def _cooldown(
    per_s: float, key: Callable[[discord.Interaction], Hashable]
) -> Callable[[_Command], _Command]:
    """Once per ``per_s`` seconds for each ``key`` (discord.py's cooldown check: a use too
    soon raises ``CommandOnCooldown``, answered by the command tree); none for 0."""
    if per_s <= 0:
        return lambda command: command
    return app_commands.checks.cooldown(1, per_s, key=key)


def playback_commands(
    voice: VoiceConnections, *, join_cooldown_s: float = 0.0, skip_cooldown_s: float = 0.0
) -> list[app_commands.Command[Any, ..., None]]:
    """The commands that drive ``voice``: join (at most once per ``join_cooldown_s`` per
    server), leave, skip (once per ``skip_cooldown_s`` per member), stop (also as clear), queue,
    history."""

    @app_commands.command(name="join", description="Join your voice channel")
    @app_commands.guild_only()
    @_cooldown(join_cooldown_s, _per_server)
    async def join(interaction: discord.Interaction) -> None:
        channel = await caller_channel(interaction, voice)
        if channel is None or interaction.guild is None:
            return
        await interaction.response.defer(ephemeral=True)
        await voice.player(interaction.guild, channel)
        await interaction.edit_original_response(content=f"Joined {channel.mention}.")

    @app_commands.command(name="leave", description="Leave the voice channel and drop the queue")
    @app_commands.guild_only()
    async def leave(interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        left = await voice.leave(interaction.guild)
        message = "Left the voice channel." if left else "I am not in a voice channel."
        await interaction.response.send_message(message, ephemeral=True)

    @app_commands.command(name="skip", description="Skip what is being said now")
    @app_commands.guild_only()
    @_cooldown(skip_cooldown_s, _per_member)
    async def skip(interaction: discord.Interaction) -> None:
        player = voice.players.get(interaction.guild_id or 0)
        skipped = player is not None and player.skip()
        message = "Skipped." if skipped else "Nothing is being said."
        await interaction.response.send_message(message, ephemeral=True)

    def stop_command(name: str) -> app_commands.Command[Any, ..., None]:
        @app_commands.command(name=name, description="Stop speaking and empty the queue")
        @app_commands.guild_only()
        async def stop(interaction: discord.Interaction) -> None:
            player = voice.players.get(interaction.guild_id or 0)
            dropped = player.stop(f"dropped by /{name}") if player is not None else 0
            await interaction.response.send_message(
                f"Stopped; {dropped} waiting message(s) dropped.", ephemeral=True
            )

        return stop

    stop, clear = stop_command("stop"), stop_command("clear")  # /clear: as other TTS bots say

    @app_commands.command(name="queue", description="What is being said and what waits")
    @app_commands.guild_only()
    async def queue(interaction: discord.Interaction) -> None:
        player = voice.players.get(interaction.guild_id or 0)
        items = player.pending() if player is not None else []
        if not items:
            await interaction.response.send_message("The queue is empty.", ephemeral=True)
            return
        lines = [
            f"{'▶' if i == 0 else f'{i}.'} {item.request.text[:QUEUE_TEXT_CHARS]} — {item.label}"
            for i, item in enumerate(items)
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="history", description="What was said here lately")
    @app_commands.guild_only()
    async def history(interaction: discord.Interaction) -> None:
        listing = voice.history.listing(interaction.guild_id or 0)
        await interaction.response.send_message(listing, ephemeral=True)

    return [join, leave, skip, stop, clear, queue, history]
