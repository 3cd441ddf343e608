"""Reading text channels aloud: the guild's reading channel (``/setup``) and the text chat of
the voice channel the bot is in (``/settings voice_chat``), bots and the skip prefix excepted.

:func:`speakable` is what a message sounds like: links become "a link to example.com" (nobody
wants a URL spelled out), custom emoji their name, attachments are named, whitespace collapses,
and a message longer than the limit is cut at a word boundary.
"""

from __future__ import annotations

import logging
import re

import discord

from bot.errors import ConfigError, InvalidRequest
from bot.speech import RequestSource, SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.names import spoken_name
from integrations.discord.preferences import Preferences
from integrations.discord.voice import VoiceConnections

__all__ = ["ChannelReader", "speakable"]

log = logging.getLogger(__name__)

_URL = re.compile(r"<?https?://(?:www\.)?([^/\s>:?#]+)[^\s>]*>?", re.IGNORECASE)
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")


def _attachments(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return f"an attachment named {names[0]}"
    return f"{len(names)} attachments: " + ", ".join(names[:-1]) + f" and {names[-1]}"


def speakable(content: str, attachment_names: list[str], limit: int) -> str:
    """The words to say for a message; empty when there is nothing to say.

    ``content`` should already have mentions resolved to names (discord.py's ``clean_content``).
    """
    text = _URL.sub(lambda m: f"a link to {m.group(1).lower()}", content)
    text = _CUSTOM_EMOJI.sub(lambda m: m.group(1).replace("_", " "), text)
    text = " ".join(text.split())
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
        text = cut + ", and so on"
    extra = _attachments(attachment_names)
    return f"{text}, with {extra}" if text and extra else text or extra


class ChannelReader:
    """Speaks the messages of the channels read aloud, in the author's voice (``/voice set``)
    or the server's, at their speed, prefixed ``<name> said:`` (their ``/nick``)."""

    def __init__(
        self,
        pipeline: SpeechPipeline,
        guild_settings: GuildSettingsStore,
        preferences: Preferences,
        voice: VoiceConnections,
    ) -> None:
        self.pipeline = pipeline
        self.guild_settings = guild_settings
        self.preferences = preferences
        self.voice = voice

    async def read(self, message: discord.Message) -> None:
        """Queue ``message`` in the guild's player if it is to be read aloud."""
        guild = message.guild
        if guild is None or message.author.bot:
            return
        server = await self.guild_settings.get(guild.id)
        current = guild.voice_client.channel if guild.voice_client else None
        words = _words(message, server, current)
        if not words:
            return
        author = message.author
        channel = current or (
            author.voice.channel if isinstance(author, discord.Member) and author.voice else None
        )
        if not isinstance(channel, discord.VoiceChannel):
            return  # nobody to speak to
        chosen = await self.preferences.voice_of(author.id)
        name = await spoken_name(author, guild.id, self.preferences)
        try:
            request = SpeechRequest.build(
                text=f"{name} said: {words}",
                voice=chosen.voice if chosen else server.voice,
                provider=chosen.provider if chosen else server.provider,
                source=RequestSource.DISCORD,
                requester=f"discord:{author.id}",
                guild=str(guild.id),
                speed=await self.preferences.speed_of(author.id) or server.speed,
            )
            await self.pipeline.prepare(request)
        except (InvalidRequest, ConfigError) as exc:
            log.info("message %s not read: %s", message.id, exc)
            return
        player = await self.voice.player(guild, channel)
        player.enqueue(request, label=author.display_name)


def _words(
    message: discord.Message, server: GuildSettings, current: discord.abc.Connectable | None
) -> str:
    """What to say of ``message``; empty when its channel is not read or it is skipped."""
    in_voice_chat = (
        server.read_voice_chat
        and isinstance(current, discord.VoiceChannel)
        and message.channel.id == current.id
    )
    if message.channel.id != server.read_channel and not in_voice_chat:
        return ""
    if server.skip_prefix and message.content.startswith(server.skip_prefix):
        return ""
    return speakable(
        message.clean_content, [a.filename for a in message.attachments], server.read_max_length
    )
