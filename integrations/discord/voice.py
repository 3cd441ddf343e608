"""The bot's voice connections: one :class:`GuildPlayer` per guild, on the guild's voice client.

:meth:`VoiceConnections.player` joins the asked voice channel (or moves there), waits for a
dropped connection that discord.py is reconnecting, and keeps the player and its queue across
such a reconnect; a voice client gone for good (``/leave``, idle, disconnected by someone)
takes its player with it, and the next request joins again.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import discord

from bot.speech import Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.audio import VoiceClientOutput
from integrations.discord.connection import ResumingVoiceClient
from integrations.discord.guilds import GuildSettingsStore
from integrations.discord.history import SpokenHistory
from integrations.discord.player import GuildPlayer, QueuedItem, Report
from integrations.discord.settings import DiscordSettings

__all__ = ["JOIN_TIMEOUT_S", "RECONNECT_WAIT_S", "VocalChannel", "VoiceConnections"]

#: What the bot speaks in: a voice channel, or a stage (where it makes itself a speaker).
VocalChannel = discord.VoiceChannel | discord.StageChannel

#: Seconds a request waits for a dropped voice connection that discord.py is reconnecting
#: before the bot leaves and joins again.
RECONNECT_WAIT_S = 20.0
#: Seconds joining a voice channel may take.
JOIN_TIMEOUT_S = 15.0

log = logging.getLogger(__name__)


class VoiceConnections:
    """The guilds' players (``players``, by guild id), each playing through a voice client;
    what each finished goes to ``history`` (``/history``), then to ``on_done``."""

    def __init__(
        self,
        pipeline: SpeechPipeline,
        settings: DiscordSettings,
        guild_settings: GuildSettingsStore,
        on_done: Report,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.guild_settings = guild_settings
        self.on_done = on_done
        self.history = SpokenHistory()
        self.players: dict[int, GuildPlayer] = {}
        self._joining: dict[int, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()  # players of voice clients gone

    async def _done(
        self,
        guild_id: int,
        item: QueuedItem,
        utterance: Utterance | None,
        error: BaseException | None,
    ) -> None:
        self.history.record(guild_id, item, utterance, error)
        await self.on_done(item, utterance, error)

    async def player(self, guild: discord.Guild, channel: VocalChannel) -> GuildPlayer:
        """The guild's player, connected to ``channel`` (joining or moving as needed; on a
        stage, a speaker: see :meth:`_take_the_stage`).

        Raises ``discord.ClientException``/``TimeoutError`` when joining fails.
        """
        # one join at a time per guild: two quick /say must not both try to connect
        async with self._joining.setdefault(guild.id, asyncio.Lock()):
            return await self._connect(guild, channel)

    def busy_elsewhere(
        self, guild: discord.Guild, channel: discord.abc.Connectable
    ) -> discord.VoiceChannel | discord.StageChannel | None:
        """The other voice channel of ``guild`` the bot is speaking in now, if any."""
        voice = guild.voice_client
        current = getattr(voice, "channel", None)
        player = self.players.get(guild.id)
        if current is not None and current != channel and player is not None and player.pending():
            assert isinstance(current, discord.VoiceChannel | discord.StageChannel)
            return current
        return None

    async def leave(self, guild: discord.Guild) -> bool:
        """Drop the guild's queue and leave its voice channel; False when in none."""
        player = self.players.pop(guild.id, None)
        if player is not None:
            await player.close()
        voice = guild.voice_client
        if voice is None:
            return player is not None
        await voice.disconnect(force=True)
        return True

    async def close(self) -> None:
        for guild_id in list(self.players):
            player = self.players.pop(guild_id)
            await player.close()

    async def _connect(self, guild: discord.Guild, channel: VocalChannel) -> GuildPlayer:
        voice = await self._voice_client(guild, channel)
        if isinstance(channel, discord.StageChannel):
            await self._take_the_stage(guild)
        player = self.players.get(guild.id)
        if player is not None and not _plays_through(player, voice):
            del self.players[guild.id]  # the player of a voice client that is gone
            await player.close()
            player = None
        if player is None:

            async def leave() -> None:
                await self.leave(guild)

            server = await self.guild_settings.get(guild.id)
            player = GuildPlayer(
                VoiceClientOutput(voice),
                functools.partial(
                    self.pipeline.speak_sentences,
                    lookahead=self.settings.sentence_lookahead,
                    live=True,
                    split=self.settings.split_sentences,
                ),
                prefetch=self.settings.prefetch,
                idle_timeout_s=server.idle_timeout_s or self.settings.idle_timeout_s,
                on_idle=leave,
                on_done=functools.partial(self._done, guild.id),
                start_s=self.settings.stream_start_s,
            )
            self.players[guild.id] = player
        return player

    async def _voice_client(
        self, guild: discord.Guild, channel: VocalChannel
    ) -> discord.VoiceClient:
        """The guild's voice client, in ``channel``: the current one (moved if need be, and
        waited for while discord.py reconnects a dropped connection), else a new one."""
        voice = guild.voice_client
        if isinstance(voice, discord.VoiceClient) and not voice.is_connected():
            if isinstance(voice, ResumingVoiceClient):
                await voice.wait_connected(RECONNECT_WAIT_S)
            if not voice.is_connected():
                log.warning("voice in guild %s did not reconnect: joining again", guild.id)
                await voice.disconnect(force=True)
                voice = guild.voice_client
        if isinstance(voice, discord.VoiceClient) and voice.is_connected():
            if voice.channel != channel:
                await voice.move_to(channel)
            return voice
        connect = functools.partial(ResumingVoiceClient, on_gone=self._voice_gone)
        return await channel.connect(timeout=JOIN_TIMEOUT_S, self_deaf=True, cls=connect)

    @staticmethod
    async def _take_the_stage(guild: discord.Guild) -> None:
        """Become a speaker of the stage the bot is in: unsuppress itself (Discord requires
        Mute Members for that), else raise its hand (Request to Speak) and play anyway, heard
        once a moderator accepts. Discord: "Modify Current User Voice State"."""
        me = guild.me
        state = me.voice
        if state is None or not state.suppress:
            return
        try:
            await me.edit(suppress=False)
        except discord.Forbidden:
            log.info(
                "guild %s: may not speak on stage %s: requested to speak", guild.id, state.channel
            )
            await me.request_to_speak()

    def _voice_gone(self, voice: ResumingVoiceClient) -> None:
        """A voice client left for good: its player goes. A reconnect, which discord.py does
        on its own when the connection drops, keeps the player and its queue."""
        player = self.players.get(voice.guild.id)
        if player is not None and _plays_through(player, voice):
            del self.players[voice.guild.id]
            task = asyncio.create_task(player.close(), name="oyez-close-player")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


def _plays_through(player: GuildPlayer, voice: discord.VoiceClient) -> bool:
    return isinstance(player.output, VoiceClientOutput) and player.output.voice is voice
