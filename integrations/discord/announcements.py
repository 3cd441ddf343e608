"""Announcements in Discord voice channels: queued in the guild's player, awaited until played.

:class:`AnnouncementWaiters` is what :class:`~integrations.discord.service.DiscordSink` speaks
through: each announcement waits for the player's report on it (by guild and request id).
"""

from __future__ import annotations

import asyncio

import discord

from bot.errors import InvalidRequest
from bot.speech import SpeechRequest, Utterance
from integrations.discord.player import QueuedItem
from integrations.discord.voice import VoiceConnections

__all__ = ["AnnouncementWaiters"]


class AnnouncementWaiters:
    """Announcements waiting for their turn to play, by (guild id, request id)."""

    def __init__(self, voice: VoiceConnections) -> None:
        self.voice = voice
        self._waiters: dict[tuple[int, str], asyncio.Future[Utterance]] = {}

    async def speak_in(
        self,
        guild: discord.Guild,
        channel: discord.VoiceChannel | discord.StageChannel,
        request: SpeechRequest,
        label: str = "announcement",
    ) -> Utterance:
        """Queue ``request`` in ``channel`` (joining it) and return once it has played.

        ``request.guild`` must be ``str(guild.id)``. Raises :class:`InvalidRequest` when the bot
        is busy in another channel of the guild, the pipeline's error when it could not be
        spoken (e.g. :class:`bot.errors.RequestExpired`), ``TimeoutError`` when it neither
        played nor failed within its ttl plus ten minutes (cut by ``/stop``).
        """
        busy = self.voice.busy_elsewhere(guild, channel)
        if busy is not None:
            raise InvalidRequest(f"the bot is busy in another voice channel ({busy.name})")
        player = await self.voice.player(guild, channel)
        key = (guild.id, request.id)
        waiter: asyncio.Future[Utterance] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        remaining_s = min(-request.overdue_s(), 86400.0)  # never expires: a day
        try:
            player.enqueue(request, label=label)
            async with asyncio.timeout(remaining_s + 600):
                return await waiter
        finally:
            self._waiters.pop(key, None)

    def played(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        """The player's report on ``item``: its waiter, if it is an announcement, gets it."""
        waiter = self._waiters.get((int(item.request.guild or 0), item.request.id))
        if waiter is not None and not waiter.done():
            if utterance is not None and error is None:
                waiter.set_result(utterance)
            else:
                waiter.set_exception(error or RuntimeError("not played"))
