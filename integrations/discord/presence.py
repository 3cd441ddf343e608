"""Leaving a voice channel nobody listens in: when the last human leaves the bot's channel, the
bot leaves too after ``discord.alone_timeout_s`` (0: it stays), dropping its queue with a line
in the log; a human who comes back in time keeps it there. The idle timeout still applies.

Who is in a channel comes from the voice states discord.py keeps (the voice-states intent); a
member discord.py has not cached counts as a human, so the bot never leaves a listener.
"""

from __future__ import annotations

import asyncio
import logging

import discord

from integrations.discord.voice import VoiceConnections

__all__ = ["AloneWatch", "humans_in"]

log = logging.getLogger(__name__)


def humans_in(channel: discord.VoiceChannel | discord.StageChannel) -> int:
    """How many members of ``channel`` are not bots (the bot itself is one)."""
    guild = channel.guild
    count = 0
    for user_id in channel.voice_states:
        member = guild.get_member(user_id)
        if member is None or not member.bot:
            count += 1
    return count


class AloneWatch:
    """Starts a countdown for a guild whose bot is left alone in voice; :meth:`changed` takes
    every voice state update."""

    def __init__(self, voice: VoiceConnections, timeout_s: float) -> None:
        self.voice = voice
        self.timeout_s = timeout_s
        self._countdowns: dict[int, asyncio.Task[None]] = {}

    def changed(self, member: discord.Member, before: discord.VoiceState) -> None:
        """``member``'s voice state changed (``before``: what it was): count down when they
        left the bot's channel empty of humans; stop counting when a human is there again or
        the bot left or moved."""
        guild = member.guild
        channel = self._bot_channel(guild)
        if channel is None or humans_in(channel) or member.id == guild.me.id:
            self._cancel(guild.id)
            return
        left_it = before.channel is not None and before.channel.id == channel.id
        if left_it and self.timeout_s > 0 and guild.id not in self._countdowns:
            task = asyncio.create_task(self._count_down(guild), name=f"oyez-alone-{guild.id}")
            self._countdowns[guild.id] = task
            task.add_done_callback(lambda _: self._forget(guild.id, task))

    def close(self) -> None:
        for guild_id in list(self._countdowns):
            self._cancel(guild_id)

    @staticmethod
    def _bot_channel(guild: discord.Guild) -> discord.VoiceChannel | discord.StageChannel | None:
        channel = getattr(guild.voice_client, "channel", None)
        return channel if isinstance(channel, discord.VoiceChannel | discord.StageChannel) else None

    async def _count_down(self, guild: discord.Guild) -> None:
        await asyncio.sleep(self.timeout_s)
        channel = self._bot_channel(guild)
        if channel is None or humans_in(channel):
            return
        player = self.voice.players.get(guild.id)
        dropped = len(player.pending()) if player is not None else 0
        log.info(
            "guild %s: alone in %s for %g s: leaving; %d queued item(s) dropped",
            guild.id,
            channel.name,
            self.timeout_s,
            dropped,
        )
        await self.voice.leave(guild)

    def _cancel(self, guild_id: int) -> None:
        task = self._countdowns.pop(guild_id, None)
        if task is not None:
            task.cancel()

    def _forget(self, guild_id: int, task: asyncio.Task[None]) -> None:
        if self._countdowns.get(guild_id) is task:
            del self._countdowns[guild_id]
