"""The Discord client: it connects, registers the slash commands and hands each event on.

Intents are the minimum: guilds and voice states; messages and their content only when
channel reading is on (``discord.read_messages``). The work is done elsewhere: the commands in
:mod:`integrations.discord.commands`, voice connections in :mod:`~integrations.discord.voice`,
channels read aloud in :mod:`~integrations.discord.reading`, announcements in
:mod:`~integrations.discord.announcements`, leaving a channel left empty in
:mod:`~integrations.discord.presence`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import discord
from discord import app_commands

from bot.schedules.store import ScheduleBook
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.announcements import AnnouncementWaiters
from integrations.discord.catalogue import VoiceCatalogue
from integrations.discord.commands.errors import OyezCommandTree
from integrations.discord.commands.people import DictionaryCommands, nick_command
from integrations.discord.commands.playback import playback_commands
from integrations.discord.commands.say import Say, say_command
from integrations.discord.commands.schedules import ScheduleCommands
from integrations.discord.commands.server import (
    credits_command,
    settings_command,
    setup_command,
)
from integrations.discord.commands.voices import VoiceCommands, voices_command
from integrations.discord.dictionary import PronunciationBook
from integrations.discord.guilds import GuildSettingsStore
from integrations.discord.names import SpeakerTurns
from integrations.discord.player import QueuedItem
from integrations.discord.preferences import Preferences
from integrations.discord.presence import AloneWatch
from integrations.discord.reading import ChannelReader
from integrations.discord.settings import DiscordSettings
from integrations.discord.voice import VoiceConnections

__all__ = ["LEAVE_TIMEOUT_S", "OyezBot"]

#: Seconds a closing bot waits for its voice connections to close (all at once).
LEAVE_TIMEOUT_S = 5.0


def _intents(settings: DiscordSettings) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.voice_states = True
    if settings.read_messages:  # privileged: only when channel reading is on
        intents.guild_messages = True
        intents.message_content = True
    return intents


class OyezBot(discord.Client):
    """Oyez on Discord. ``pipeline`` is shared with the other front ends; ``preferences`` and
    ``guild_settings`` default to the SQLite stores in the data directory."""

    def __init__(
        self,
        pipeline: SpeechPipeline,
        settings: DiscordSettings,
        *,
        preferences: Preferences | None = None,
        guild_settings: GuildSettingsStore | None = None,
        **options: Any,
    ) -> None:
        super().__init__(intents=_intents(settings), **options)
        self.pipeline = pipeline
        self.settings = settings
        self.tree = OyezCommandTree(self)
        data_dir = pipeline.settings.data_dir
        self.preferences = preferences or Preferences(data_dir)
        self.guild_settings = guild_settings or GuildSettingsStore(data_dir)
        self.schedules = ScheduleBook(data_dir)
        self.dictionary = PronunciationBook(data_dir)
        pipeline.pronunciations.guild_lookup = self.dictionary.of_guild
        self.voice = VoiceConnections(pipeline, settings, self.guild_settings, self._played)
        self.announcements = AnnouncementWaiters(self.voice)
        self.alone = AloneWatch(self.voice, settings.alone_timeout_s)
        turns = SpeakerTurns()  # one per guild for /say and reading alike
        self.reader = ChannelReader(
            pipeline, self.guild_settings, self.preferences, self.voice, turns
        )
        self.say = Say(pipeline, self.guild_settings, self.preferences, self.voice, turns)
        self._add_commands()

    def _add_commands(self) -> None:
        catalogue = VoiceCatalogue(self.pipeline)
        commands: list[app_commands.Command[Any, ..., None] | app_commands.Group] = [
            say_command(self.say),
            say_command(self.say, "tts"),
            VoiceCommands(self.pipeline, self.preferences, catalogue, self.guild_settings),
            nick_command(self.preferences),
            DictionaryCommands(self.dictionary),
            voices_command(catalogue),
            credits_command(self.pipeline),
            settings_command(self.pipeline, self.guild_settings, catalogue),
            setup_command(self.settings, self.guild_settings),
            *playback_commands(
                self.voice,
                join_cooldown_s=self.settings.join_cooldown_s,
                skip_cooldown_s=self.settings.skip_cooldown_s,
            ),
            ScheduleCommands(self.pipeline, self.schedules),
        ]
        for command in commands:
            self.tree.add_command(command)

    async def setup_hook(self) -> None:
        if self.settings.sync_guilds:
            for guild_id in self.settings.sync_guilds:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if self.settings.read_messages:
            await self.reader.read(message)

    async def on_voice_state_update(
        self,
        member: discord.Member,
        before: discord.VoiceState,
        after: discord.VoiceState,  # noqa: ARG002 - discord.py's event; the bot's channel counts
    ) -> None:
        self.alone.changed(member, before)

    async def speak_in(
        self,
        guild: discord.Guild,
        channel: discord.VoiceChannel | discord.StageChannel,
        request: SpeechRequest,
        label: str = "announcement",
    ) -> Utterance:
        """:meth:`AnnouncementWaiters.speak_in`: queue ``request``, return once played."""
        return await self.announcements.speak_in(guild, channel, request, label)

    async def _played(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        self.announcements.played(item, utterance, error)
        await self.say.played(item, utterance, error)
        await self.reader.played(item, utterance, error)

    async def _leave_voice(self) -> None:
        """Leave every voice channel at once, for at most :data:`LEAVE_TIMEOUT_S`: discord.py's
        ``close`` leaves them one after the other, a gateway with hundreds of voice
        connections would take minutes to stop."""
        leaving = [asyncio.create_task(v.disconnect(force=True)) for v in self.voice_clients]
        if leaving:
            _, late = await asyncio.wait(leaving, timeout=LEAVE_TIMEOUT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*leaving, return_exceptions=True)

    async def close(self) -> None:
        self.alone.close()
        await self.voice.close()
        await self._leave_voice()
        await super().close()
        await self.preferences.close()
        await self.guild_settings.close()
        if self.pipeline.pronunciations.guild_lookup == self.dictionary.of_guild:
            self.pipeline.pronunciations.guild_lookup = None
        await self.dictionary.close()
        await asyncio.to_thread(self.schedules.close)
