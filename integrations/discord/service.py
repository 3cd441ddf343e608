"""The Discord bot as a front end of ``oyez run``, and as the sink of announcements that name
a Discord voice channel (``discord: {guild_id, channel_id}``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import discord
import yarl

from bot.announce.model import Announcement, Target, TargetResult
from bot.errors import RequestExpired
from bot.frontend import Parts
from bot.ops.config import DiscordChannel
from bot.speech import OutputProfile, SpeechRequest, Utterance
from bot.synthesis.prepared import PreparedRequest
from integrations.discord.bot import OyezBot
from integrations.discord.relay import DeliveryWorker, RelayedDiscordSink
from integrations.discord.settings import DiscordSettings
from integrations.discord.shards import IdentifyGate, ShardedOyezBot, shard_of
from integrations.discord.shared_stores import RedisGuildSettings, RedisPreferences

__all__ = ["DiscordFrontEnd", "DiscordSink", "discord_front_end"]

log = logging.getLogger(__name__)


class DiscordSink:
    """Speaks announcements in Discord voice channels through each guild's queue.

    The bot joins the channel when it is in none of that guild (or idle in another one); when
    it is busy in another channel of the guild, the target fails with that reason rather than
    cutting a conversation short. A target's result comes when its utterance has played.
    """

    kind: ClassVar[str] = "discord"
    profile = OutputProfile.OGG_OPUS

    def __init__(self, bot: OyezBot, relay: RelayedDiscordSink | None = None) -> None:
        """``relay``: where the targets of guilds on other processes' shards go."""
        self.bot = bot
        self.relay = relay

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,  # noqa: ARG002 - the Sink protocol
        prepared: PreparedRequest | None = None,  # noqa: ARG002 - each guild prepares its own
    ) -> tuple[list[TargetResult], Utterance | None]:
        outcomes = await asyncio.gather(*(self._one(t, request) for t in targets))
        results = [result for result, _ in outcomes]
        spoken = next((u for _, u in outcomes if u is not None), None)
        return results, spoken

    async def warm(self, request: SpeechRequest, targets: list[Target]) -> None:
        """Make ``request``'s audio ahead (scheduled alerts), into the audio cache, the way the
        guild players will ask for it: sentence by sentence unless ``discord.split_sentences``
        is off, once per guild of ``targets`` (each guild's pronunciation dictionary may say it
        otherwise). Raises the pipeline's errors."""
        guilds = dict.fromkeys(str(t.guild_id) for t in targets if isinstance(t, DiscordChannel))
        for guild in guilds or [request.guild]:
            sentences = self.bot.pipeline.speak_sentences(
                request.model_copy(update={"guild": guild}), split=self.bot.settings.split_sentences
            )
            async for _ in sentences:
                pass

    async def _one(
        self, target: Target, request: SpeechRequest
    ) -> tuple[TargetResult, Utterance | None]:
        assert isinstance(target, DiscordChannel)
        if self.relay is not None and not self._runs_shard_of(target.guild_id):
            return await self.relay.relay(target, request), None
        return await self.speak_here(target, request)

    def _runs_shard_of(self, guild_id: int) -> bool:
        settings = self.bot.settings
        if settings.shard_count is None or settings.shard_ids is None:
            return True
        return shard_of(guild_id, settings.shard_count) in settings.shard_ids

    async def speak_here(
        self, target: DiscordChannel, request: SpeechRequest
    ) -> tuple[TargetResult, Utterance | None]:
        """Speak ``request`` in ``target`` through this process's bot; its result."""
        name = str(target)
        guild = self.bot.get_guild(target.guild_id)
        if guild is None:
            return TargetResult(name, False, "the bot is not in that server"), None
        channel = guild.get_channel(target.channel_id)
        if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
            return TargetResult(name, False, "no such voice channel in that server"), None
        try:
            utterance = await self.bot.speak_in(
                guild, channel, request.model_copy(update={"guild": str(guild.id)})
            )
        except RequestExpired as exc:
            return TargetResult(name, False, str(exc), expired=True), None
        except Exception as exc:
            log.warning("announcement %s: %s: %s", request.id, name, exc)
            return TargetResult(name, False, str(exc) or type(exc).__name__), None
        return TargetResult(name, True, duration_s=round(utterance.duration_s, 3)), utterance


class DiscordFrontEnd:
    """Connects the bot and serves until cancelled. The token is never logged."""

    name = "discord"

    async def idle(self) -> bool:
        return False

    def __init__(
        self, bot: OyezBot, settings: DiscordSettings, worker: DeliveryWorker | None = None
    ) -> None:
        """``worker``: speaks the deliveries other processes relay to this one's shards."""
        self.bot = bot
        self.settings = settings
        self.worker = worker

    async def start(self) -> None:
        """Point discord.py at the configured REST and gateway URLs, then log in.

        ``api_base_url`` and ``gateway_url`` serve large deployments behind a proxy; TLS uses
        the system's trust store (``SSL_CERT_FILE`` works) and is never unchecked.
        """
        assert self.settings.token is not None
        discord.http.Route.BASE = str(self.settings.api_base_url).rstrip("/")
        if self.settings.gateway_url is not None:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
                str(self.settings.gateway_url)
            )
        log.info("discord: connecting (commands sync %s)", self.settings.sync_guilds or "globally")
        if self.settings.sharded:
            shards = self.settings.shard_ids or "all"
            log.info("discord: shards %s of %s", shards, self.settings.shard_count)
        await self.bot.login(self.settings.token.get_secret_value())

    async def serve(self) -> None:
        if self.worker is None:
            await self.bot.connect(reconnect=True)
            return
        relayed = asyncio.create_task(self.worker.serve(), name="oyez-discord-relay")
        try:
            await self.bot.connect(reconnect=True)
        finally:
            relayed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relayed

    async def stop(self) -> None:
        await self.bot.close()

    def ready(self) -> tuple[bool, str]:
        if self.bot.is_ready() and not self.bot.is_closed():
            return True, f"connected as {self.bot.user}"
        return False, "not connected to the gateway"


def _bot(parts: Parts, settings: DiscordSettings) -> OyezBot:
    """The bot: its stores shared when the engine is, as shards when ``shard_count`` is set
    (their IDENTIFYs spaced through the engine with the other processes')."""
    engine = parts.engine
    options: dict[str, Any] = {}
    gate = None
    if engine is not None and engine.client is not None:  # shared with the other processes
        prefix = engine.settings.key_prefix
        options["preferences"] = RedisPreferences(engine.client, prefix)
        options["guild_settings"] = RedisGuildSettings(engine.client, prefix)
        gate = IdentifyGate(engine.client, prefix)
    if settings.sharded:
        return ShardedOyezBot(parts.pipeline, settings, gate=gate, **options)
    return OyezBot(parts.pipeline, settings, **options)


def _relay(parts: Parts, settings: DiscordSettings) -> RelayedDiscordSink | None:
    engine = parts.engine
    if engine is None or engine.client is None:
        return None
    return RelayedDiscordSink(
        engine.client,
        engine.settings.key_prefix,
        settings.shard_count or 1,
        parts.pipeline,
        split_sentences=settings.split_sentences,
        takeover_s=settings.relay_takeover_s,
    )


def discord_front_end(parts: Parts) -> DiscordFrontEnd | None:
    """The Discord front end when ``discord.token`` is set (and its sink added to the
    announcer). In a process without the gateway role, no bot: with a shared engine the
    ``discord`` sink relays each target to the gateway process of its guild's shard. Raises
    :class:`~bot.errors.ConfigError` for a wrong ``discord`` section."""
    settings = DiscordSettings.from_settings(parts.settings)
    if settings.token is None:
        return None
    relay = _relay(parts, settings)
    if "gateway" not in parts.roles:
        if relay is not None:
            parts.announcer.add_sink(relay)
        return None
    bot = _bot(parts, settings)
    parts.announcer.add_sink(DiscordSink(bot, relay))
    worker = None
    if relay is not None:
        shards = settings.shard_ids or list(range(settings.shard_count or 1))
        here = DiscordSink(bot).speak_here
        worker = DeliveryWorker(
            relay.client,
            relay.prefix,
            shards,
            here,
            bot.wait_until_ready,
            takeover_s=settings.relay_takeover_s,
        )
    return DiscordFrontEnd(bot, settings, worker)
