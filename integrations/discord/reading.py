"""Reading text channels aloud: the guild's reading channel (``/setup``) and the text chat of
the voice or stage channel the bot is in (``/settings voice_chat``).

Who is read is the server's choice (``/settings``): not messages starting with the skip prefix,
not bots or webhooks (unless ``read_bots``), only members with ``read_role`` when one is set,
and only members in the bot's voice channel with ``require_voice``. What is said is
:func:`~integrations.discord.chat.speakable`, at most ``read_max_length`` characters and about
``read_max_s`` seconds at the author's speed; "<name> said" comes first when the speaker
changes or after ``xsaid_gap_s`` (:class:`~integrations.discord.names.SpeakerTurns`).
"""

from __future__ import annotations

import asyncio
import logging
import re

import discord

from bot.errors import ConfigError, InvalidRequest
from bot.ops.logs import mask_secrets
from bot.speech import RequestSource, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.chat import chars_for, speakable
from integrations.discord.commands.errors import fit
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.names import SpeakerTurns, spoken_name
from integrations.discord.player import QueuedItem, Skipped
from integrations.discord.preferences import Preferences
from integrations.discord.saved_voice import choices, prepare_first
from integrations.discord.voice import VocalChannel, VoiceConnections

__all__ = ["ChannelReader", "speakable"]

log = logging.getLogger(__name__)

_MENTION = re.compile(r"<(@!?|@&|#)(\d+)>")
#: Seconds before a guild is told again of the same reading problem.
NOTICE_GAP_S = 3600.0


class ChannelReader:
    """Speaks the messages of the channels read aloud, in the author's voice (``/voice set``)
    or the server's, at their speed, named by their ``/nick``."""

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
        self._in_order: dict[int, asyncio.Lock] = {}
        #: The channel each queued message came from, by request id (for :meth:`played`).
        self._from: dict[str, discord.abc.Messageable] = {}
        #: When each guild was last told that its messages are read in another voice or not
        #: at all (loop time), by (guild id, what it was told).
        self._told: dict[tuple[int, str], float] = {}

    async def read(self, message: discord.Message) -> None:
        """Queue ``message`` in the guild's player if it is to be read aloud, after the guild's
        earlier messages: discord.py handles each event in its own task, and without the
        guild's lock (taken before any await, so in arrival order) a quick message could
        overtake a slower one, and its "<name> said" be decided out of turn."""
        guild = message.guild
        if guild is None or (guild.me is not None and message.author.id == guild.me.id):
            return
        async with self._in_order.setdefault(guild.id, asyncio.Lock()):
            await self._read(message, guild)

    async def _read(self, message: discord.Message, guild: discord.Guild) -> None:
        server = await self.guild_settings.get(guild.id)
        current = guild.voice_client.channel if guild.voice_client else None
        author = message.author
        channel = current or (
            author.voice.channel if isinstance(author, discord.Member) and author.voice else None
        )
        if not isinstance(channel, VocalChannel) or not _is_read(message, server, current):
            return  # nobody to speak to, or not a message to read
        speed = await self.preferences.speed_of(author.id) or server.speed
        limit = min(server.read_max_length, chars_for(server.read_max_s, speed or 1.0))
        words = speakable(
            message.content,
            [a.filename for a in message.attachments],
            limit,
            emoji=server.emoji,
            names=await self._mention_names(message),
            repeats=server.repeat_limit,
        )
        if not words:
            return
        if self.turns.name_due(guild.id, author.id, server.xsaid_gap_s):
            words = f"{await spoken_name(author, guild.id, self.preferences)} said: {words}"
        await self._enqueue(message, server, channel, words, speed)

    async def _enqueue(
        self,
        message: discord.Message,
        server: GuildSettings,
        channel: VocalChannel,
        words: str,
        speed: float | None,
    ) -> None:
        author = message.author
        assert message.guild is not None
        base = SpeechRequest.build(
            text=words,
            source=RequestSource.DISCORD,
            requester=f"discord:{author.id}",
            guild=str(message.guild.id),
            speed=speed,
        )
        saved = await self.preferences.voice_of(author.id)
        named = list(self.pipeline.settings.voices)
        try:
            # a saved voice that is gone passes the words on (logged), never drops them
            prepared, _ = await prepare_first(self.pipeline, choices(base, saved, server, named))
        except (InvalidRequest, ConfigError) as exc:
            log.info("message %s not read: %s", message.id, exc)
            return
        player = await self.voice.player(message.guild, channel)
        self._from[prepared.request.id] = message.channel
        player.enqueue(prepared, label=author.display_name)

    async def played(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        """After a message read aloud: when another provider had to read it (the member's
        is down, out of credits…) or none could, say so in its channel, once per guild and
        problem in :data:`NOTICE_GAP_S` (a reader of the channel otherwise hears the voice
        change, or nothing, and never knows why). Never raises."""
        channel = self._from.pop(item.request.id, None)
        guild = item.request.guild
        if channel is None or guild is None:
            return
        if utterance is not None and error is None:
            if not utterance.fallbacks:
                return
            note = utterance.fallbacks[0]
            key = f"fallback:{note.provider}"
            text = f"🔁 Reading in {utterance.voice.label} for now: {note.provider}: {note.reason}"
        elif error is not None and not isinstance(error, asyncio.CancelledError | Skipped):
            key, text = "failed", f"⚠️ Messages are not being read aloud: {error}"
        else:
            return
        now = asyncio.get_running_loop().time()
        told = self._told.get((int(guild), key))
        if told is not None and now - told < NOTICE_GAP_S:
            return
        self._told[(int(guild), key)] = now
        try:
            await channel.send(fit(mask_secrets(text)))
        except discord.DiscordException as exc:
            log.warning("guild %s: could not post a reading notice: %s", guild, exc)

    async def _mention_names(self, message: discord.Message) -> dict[str, str]:
        """Mention id → the name to say: a member's ``/nick`` or cleaned display name, a role's
        or a channel's name."""
        guild = message.guild
        assert guild is not None
        names: dict[str, str] = {}
        for kind, raw in _MENTION.findall(message.content):
            name: str | None
            if kind == "@&":
                role = guild.get_role(int(raw))
                name = role.name if role else None
            elif kind == "#":
                channel = guild.get_channel(int(raw))
                name = channel.name if channel else None
            else:
                member = guild.get_member(int(raw)) or discord.utils.get(
                    message.mentions, id=int(raw)
                )
                name = await spoken_name(member, guild.id, self.preferences) if member else None
            if name:
                names[raw] = name
        return names


def _is_read(
    message: discord.Message, server: GuildSettings, current: discord.abc.Connectable | None
) -> bool:
    """Whether ``message`` is one the server reads: in a channel read, by someone read."""
    in_voice_chat = (
        server.read_voice_chat
        and isinstance(current, VocalChannel)
        and message.channel.id == current.id
    )
    if message.channel.id != server.read_channel and not in_voice_chat:
        return False
    if server.skip_prefix and message.content.startswith(server.skip_prefix):
        return False
    return _author_is_read(message.author, server, current)


def _author_is_read(
    author: discord.User | discord.Member,
    server: GuildSettings,
    current: discord.abc.Connectable | None,
) -> bool:
    if author.bot and not server.read_bots:
        return False
    roles = {role.id for role in getattr(author, "roles", [])}
    if server.read_role is not None and server.read_role not in roles:
        return False
    if server.require_voice:
        where = (
            author.voice.channel if isinstance(author, discord.Member) and author.voice else None
        )
        return where is not None and (current is None or where.id == getattr(current, "id", None))
    return True
