"""The Discord bot: slash commands that speak in voice channels.

Commands: ``/say text [voice] [provider]``, ``/voice set`` (autocomplete across providers),
``/voice show``, ``/voices [provider]``, ``/join``, ``/leave``, ``/skip``, ``/stop``,
``/queue``, ``/credits``, ``/settings`` and ``/setup`` (Manage Server); with
``discord.read_messages`` on, a text channel (``/setup``) and the text chat of the voice channel
the bot is in (``/settings voice_chat``, on by default) are read aloud. Each guild has one
:class:`~integrations.discord.player.GuildPlayer`; the bot joins the caller's voice channel,
speaks through the shared speech pipeline (cache, rate limits, credits, fallback) and edits its
deferred reply to say what was said, by which voice, and why another voice spoke when the asked
one could not.

Intents are the minimum: guilds and voice states; messages and their content only when
channel reading is on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import discord
from discord import app_commands

from bot.errors import ConfigError, InvalidRequest, OyezError
from bot.ops.config import NamedVoice
from bot.providers.base import Provider
from bot.providers.report import credits_report
from bot.speech import RequestSource, SpeechRequest, Utterance, Voice
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.audio import VoiceClientOutput
from integrations.discord.connection import ResumingVoiceClient
from integrations.discord.guilds import GuildSettings, GuildSettingsStore
from integrations.discord.player import GuildPlayer, QueuedItem
from integrations.discord.preferences import Preferences, VoiceChoice
from integrations.discord.reading import speakable
from integrations.discord.schedules import add_schedule_commands
from integrations.discord.settings import DiscordSettings

__all__ = ["OyezBot"]

#: Seconds /say may spend validating before it must defer (Discord allows 3 s in all).
PREPARE_BUDGET_S = 1.5
#: Seconds a request waits for a dropped voice connection that discord.py is reconnecting
#: before the bot leaves and joins again.
RECONNECT_WAIT_S = 20.0

log = logging.getLogger(__name__)


def _parse_voice(
    value: str | None, provider: str | None
) -> tuple[str | None, str | None, str | None]:
    """(provider, model, voice) from an autocomplete value ``provider|model|id`` or a plain
    voice id or name (with ``provider`` as given)."""
    if value is not None and value.count("|") == 2:
        chosen_provider, model, voice = value.split("|")
        return chosen_provider, model, voice
    return provider, None, value


def _reply(utterance: Utterance) -> str:
    lines = [
        f"🔊 Said: {utterance.text}",
        f"-# {utterance.voice.label} · {utterance.duration_s:.1f} s",
    ]
    if utterance.cached:
        lines[-1] += " · from the cache"
    for note in utterance.fallbacks:
        lines.append(f"-# instead of {note.provider}: {note.reason}")
    return "\n".join(lines)


class OyezBot(discord.Client):
    """Oyez on Discord. ``pipeline`` is shared with the other front ends."""

    def __init__(self, pipeline: SpeechPipeline, settings: DiscordSettings, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.voice_states = True
        if settings.read_messages:  # privileged: only when channel reading is on
            intents.guild_messages = True
            intents.message_content = True
        super().__init__(intents=intents, **options)
        self.pipeline = pipeline
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        self.players: dict[int, GuildPlayer] = {}
        self.preferences = Preferences(pipeline.settings.data_dir)
        self.guild_settings = GuildSettingsStore(pipeline.settings.data_dir)
        self._joining: dict[int, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()  # players of voice clients gone
        # /say requests of each guild still on their way to the queue, by arrival
        self._turns: dict[int, list[tuple[float, int]]] = {}
        self._turn_taken = asyncio.Event()
        # announcements waiting for their turn to play, by (guild id, request id)
        self._waiters: dict[tuple[int, str], asyncio.Future[Utterance]] = {}
        self._add_commands()
        add_schedule_commands(self)

    async def setup_hook(self) -> None:
        if self.settings.sync_guilds:
            for guild_id in self.settings.sync_guilds:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    # -- voice -------------------------------------------------------------------------------

    async def _player(self, guild: discord.Guild, channel: discord.VoiceChannel) -> GuildPlayer:
        """The guild's player, connected to ``channel`` (joining or moving as needed)."""
        # one join at a time per guild: two quick /say must not both try to connect
        async with self._joining.setdefault(guild.id, asyncio.Lock()):
            return await self._connect(guild, channel)

    async def _connect(self, guild: discord.Guild, channel: discord.VoiceChannel) -> GuildPlayer:
        voice = await self._voice_client(guild, channel)
        player = self.players.get(guild.id)
        if player is not None and not self._plays_through(player, voice):
            del self.players[guild.id]  # the player of a voice client that is gone
            await player.close()
            player = None
        if player is None:

            async def leave() -> None:
                await self._leave(guild)

            player = GuildPlayer(
                VoiceClientOutput(voice),
                functools.partial(
                    self.pipeline.speak_sentences,
                    lookahead=self.settings.sentence_lookahead,
                    live=True,
                    split=self.settings.split_sentences,
                ),
                prefetch=self.settings.prefetch,
                idle_timeout_s=(await self.guild_settings.get(guild.id)).idle_timeout_s
                or self.settings.idle_timeout_s,
                on_idle=leave,
                on_done=self._spoken,
                start_s=self.settings.stream_start_s,
            )
            self.players[guild.id] = player
        return player

    async def _voice_client(
        self, guild: discord.Guild, channel: discord.VoiceChannel
    ) -> discord.VoiceClient:
        """The guild's voice client, in ``channel``: the current one (moved if need be, and
        waited for while discord.py reconnects a dropped connection), else a new one.

        Raises ``discord.ClientException``/``TimeoutError`` when joining fails.
        """
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
        return await channel.connect(timeout=15, self_deaf=True, cls=connect)

    @staticmethod
    def _plays_through(player: GuildPlayer, voice: discord.VoiceClient) -> bool:
        return isinstance(player.output, VoiceClientOutput) and player.output.voice is voice

    def _voice_gone(self, voice: ResumingVoiceClient) -> None:
        """A voice client left for good (``/leave``, idle, disconnected by someone, or not
        reconnected): its player goes; the next request joins again. A reconnect, which
        discord.py does on its own when the connection drops, keeps the player and its queue."""
        player = self.players.get(voice.guild.id)
        if player is not None and self._plays_through(player, voice):
            del self.players[voice.guild.id]
            task = asyncio.create_task(player.close(), name="oyez-close-player")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _leave(self, guild: discord.Guild) -> bool:
        player = self.players.pop(guild.id, None)
        if player is not None:
            await player.close()
        voice = guild.voice_client
        if voice is None:
            return player is not None
        await voice.disconnect(force=True)
        return True

    async def on_message(self, message: discord.Message) -> None:
        """Read aloud the guild's reading channel (``/setup``) and the text chat of the voice
        channel the bot is in (``read_voice_chat``); bots and the skip prefix excepted."""
        guild = message.guild
        if not self.settings.read_messages or guild is None or message.author.bot:
            return
        server = await self.guild_settings.get(guild.id)
        current = guild.voice_client.channel if guild.voice_client else None
        in_voice_chat = (
            server.read_voice_chat
            and isinstance(current, discord.VoiceChannel)
            and message.channel.id == current.id
        )
        if message.channel.id != server.read_channel and not in_voice_chat:
            return
        if server.skip_prefix and message.content.startswith(server.skip_prefix):
            return
        words = speakable(
            message.clean_content,
            [a.filename for a in message.attachments],
            server.read_max_length,
        )
        if not words:
            return
        author = message.author
        channel = current or (
            author.voice.channel if isinstance(author, discord.Member) and author.voice else None
        )
        if not isinstance(channel, discord.VoiceChannel):
            return  # nobody to speak to
        chosen = await self.preferences.voice_of(author.id)
        try:
            request = SpeechRequest.build(
                text=f"{author.display_name} said: {words}",
                voice=chosen.voice if chosen else server.voice,
                provider=chosen.provider if chosen else server.provider,
                source=RequestSource.DISCORD,
                requester=f"discord:{author.id}",
                guild=str(guild.id),
            )
            await self.pipeline.prepare(request)
        except (InvalidRequest, ConfigError) as exc:
            log.info("message %s not read: %s", message.id, exc)
            return
        player = await self._player(guild, channel)
        player.enqueue(request, label=author.display_name)

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
        voice = guild.voice_client
        player = self.players.get(guild.id)
        current = getattr(voice, "channel", None)
        if current is not None and current != channel and player is not None and player.pending():
            raise InvalidRequest(f"the bot is busy in another voice channel ({current.name})")
        if not isinstance(channel, discord.VoiceChannel):
            raise InvalidRequest("stage channels are not supported")
        player = await self._player(guild, channel)
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

    async def _spoken(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        waiter = self._waiters.get((int(item.request.guild or 0), item.request.id))
        if waiter is not None and not waiter.done():
            if utterance is not None and error is None:
                waiter.set_result(utterance)
            else:
                waiter.set_exception(error or RuntimeError("not played"))
        interaction = self._interactions.pop(item.request.id, None)
        if interaction is None:
            return
        if utterance is not None and error is None:
            await interaction.edit_original_response(content=_reply(utterance))
        else:
            await interaction.edit_original_response(content=f"⚠️ Not said: {error}")

    # -- commands ------------------------------------------------------------------------------

    def _add_commands(self) -> None:
        self._interactions: dict[str, discord.Interaction] = {}
        tree = self.tree

        @tree.command(name="say", description="Speak in your voice channel")
        @app_commands.describe(
            text="What to say", voice="A voice (see /voices)", provider="A TTS provider"
        )
        @app_commands.guild_only()
        async def say(
            interaction: discord.Interaction,
            text: str,
            voice: str | None = None,
            provider: str | None = None,
        ) -> None:
            await self.say(interaction, text, voice, provider)

        voice_group = app_commands.Group(name="voice", description="Your voice", guild_only=True)

        @voice_group.command(name="set", description="Choose the voice you speak with")
        @app_commands.describe(voice="Start typing: voices of every provider")
        async def voice_set(interaction: discord.Interaction, voice: str) -> None:
            await self.set_voice(interaction, voice)

        @voice_set.autocomplete("voice")
        async def voice_set_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return await self.voice_choices(current)

        @voice_group.command(name="show", description="The voice you speak with")
        async def voice_show(interaction: discord.Interaction) -> None:
            choice = await self.preferences.voice_of(interaction.user.id)
            if choice is None:
                message = "You speak with the server's default voice; choose one with /voice set."
            else:
                message = f"You speak with {choice.label}."
            await interaction.response.send_message(message, ephemeral=True)

        tree.add_command(voice_group)

        @tree.command(name="voices", description="The voices you can use")
        @app_commands.describe(provider="Only this provider's voices")
        async def voices(interaction: discord.Interaction, provider: str | None = None) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            found = await self._all_voices(provider)
            lines = [f"`{v.id}` — {v.name} ({v.provider}/{v.model})" for v in found]
            named = [f"`{n}` — named voice ({nv.provider})" for n, nv in self.named_voices()]
            text = "\n".join(named + lines) or "No voices found."
            await interaction.edit_original_response(content=text[:1990])

        @tree.command(name="credits", description="Provider credits, spend, limits, circuits")
        @app_commands.guild_only()
        @app_commands.default_permissions(manage_guild=True)
        async def credits(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            lines = await credits_report(self.pipeline)
            text = "```\n" + "\n".join(lines)[:1900] + "\n```"
            await interaction.edit_original_response(content=text)

        @tree.command(name="settings", description="This server's settings (no option: show)")
        @app_commands.guild_only()
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.describe(
            voice="Default voice of the server",
            provider="Default provider of the server",
            max_length="Longest /say text, in characters",
            paid_role="Also allow this role to use paid providers",
            clear_paid_roles="Allow everyone to use paid providers again",
            idle_timeout_s="Leave the voice channel after this many idle seconds",
            name_prefix='Say "<name> said" before each message',
            voice_chat="Read the text chat of the voice channel I am in",
        )
        async def settings_command(
            interaction: discord.Interaction,
            voice: str | None = None,
            provider: str | None = None,
            max_length: app_commands.Range[int, 1, 100_000] | None = None,
            paid_role: discord.Role | None = None,
            clear_paid_roles: bool = False,
            idle_timeout_s: app_commands.Range[int, 10, 86_400] | None = None,
            name_prefix: bool | None = None,
            voice_chat: bool | None = None,
        ) -> None:
            assert interaction.guild is not None
            current = await self.guild_settings.get(interaction.guild.id)
            changes: dict[str, Any] = {}
            if voice is not None or provider is not None:
                chosen_provider, model, chosen_voice = _parse_voice(voice, provider)
                try:
                    await self.pipeline.prepare(
                        SpeechRequest.build(
                            text="voice check",
                            voice=chosen_voice,
                            provider=chosen_provider,
                            model=model,
                        )
                    )
                except (InvalidRequest, ConfigError) as exc:
                    await interaction.response.send_message(f"⚠️ {exc}", ephemeral=True)
                    return
                changes.update(voice=voice, provider=provider)
            if max_length is not None:
                changes["max_length"] = max_length
            if clear_paid_roles:
                changes["paid_roles"] = []
            if paid_role is not None:
                roles = [] if clear_paid_roles else current.paid_roles
                changes["paid_roles"] = sorted({*roles, paid_role.id})
            if idle_timeout_s is not None:
                changes["idle_timeout_s"] = float(idle_timeout_s)
            if name_prefix is not None:
                changes["name_prefix"] = name_prefix
            if voice_chat is not None:
                changes["read_voice_chat"] = voice_chat
            updated = current.model_copy(update=changes)
            if changes:
                await self.guild_settings.put(interaction.guild.id, updated)
            await interaction.response.send_message(
                ("Saved.\n" if changes else "") + self._describe_settings(updated), ephemeral=True
            )

        @settings_command.autocomplete("voice")
        async def settings_voice_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return await self.voice_choices(current)

        @tree.command(name="setup", description="Read a text channel aloud in voice")
        @app_commands.guild_only()
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.describe(channel="The text channel to read (none: stop reading)")
        async def setup(
            interaction: discord.Interaction, channel: discord.TextChannel | None = None
        ) -> None:
            assert interaction.guild is not None
            current = await self.guild_settings.get(interaction.guild.id)
            updated = current.model_copy(update={"read_channel": channel.id if channel else None})
            await self.guild_settings.put(interaction.guild.id, updated)
            if channel is None:
                message = "I no longer read a channel aloud."
            elif not self.settings.read_messages:
                message = (
                    f"Saved {channel.mention}, but reading is off: set discord.read_messages "
                    "and enable the message content intent."
                )
            else:
                message = f"I read {channel.mention} aloud in the voice channel I am in."
            await interaction.response.send_message(message, ephemeral=True)

        @tree.command(name="join", description="Join your voice channel")
        @app_commands.guild_only()
        async def join(interaction: discord.Interaction) -> None:
            channel = await self._caller_channel(interaction)
            if channel is None or interaction.guild is None:
                return
            await interaction.response.defer(ephemeral=True)
            await self._player(interaction.guild, channel)
            await interaction.edit_original_response(content=f"Joined {channel.mention}.")

        @tree.command(name="leave", description="Leave the voice channel and drop the queue")
        @app_commands.guild_only()
        async def leave(interaction: discord.Interaction) -> None:
            assert interaction.guild is not None
            left = await self._leave(interaction.guild)
            message = "Left the voice channel." if left else "I am not in a voice channel."
            await interaction.response.send_message(message, ephemeral=True)

        @tree.command(name="skip", description="Skip what is being said now")
        @app_commands.guild_only()
        async def skip(interaction: discord.Interaction) -> None:
            player = self.players.get(interaction.guild_id or 0)
            skipped = player is not None and player.skip()
            message = "Skipped." if skipped else "Nothing is being said."
            await interaction.response.send_message(message, ephemeral=True)

        @tree.command(name="stop", description="Stop speaking and empty the queue")
        @app_commands.guild_only()
        async def stop(interaction: discord.Interaction) -> None:
            player = self.players.get(interaction.guild_id or 0)
            dropped = player.stop() if player is not None else 0
            await interaction.response.send_message(
                f"Stopped; {dropped} waiting message(s) dropped.", ephemeral=True
            )

        @tree.command(name="queue", description="What is being said and what waits")
        @app_commands.guild_only()
        async def queue(interaction: discord.Interaction) -> None:
            player = self.players.get(interaction.guild_id or 0)
            items = player.pending() if player is not None else []
            if not items:
                await interaction.response.send_message("The queue is empty.", ephemeral=True)
                return
            lines = [
                f"{'▶' if i == 0 else f'{i}.'} {item.request.text[:80]} — {item.label}"
                for i, item in enumerate(items)
            ]
            await interaction.response.send_message("\n".join(lines), ephemeral=True)

    async def _caller_channel(
        self, interaction: discord.Interaction
    ) -> discord.VoiceChannel | None:
        """The caller's voice channel, or None after telling them (ephemerally) why not."""
        member = interaction.user
        channel = (
            member.voice.channel if isinstance(member, discord.Member) and member.voice else None
        )
        if not isinstance(channel, discord.VoiceChannel):
            await interaction.response.send_message(
                "Join a voice channel first, then ask again.", ephemeral=True
            )
            return None
        guild = interaction.guild
        current = guild.voice_client.channel if guild and guild.voice_client else None
        player = self.players.get(guild.id) if guild else None
        busy = player is not None and bool(player.pending())
        if current is not None and current != channel and busy:
            assert isinstance(current, discord.VoiceChannel)
            await interaction.response.send_message(
                f"I am speaking in {current.mention} right now; join it, or ask again when "
                "I am done.",
                ephemeral=True,
            )
            return None
        return channel

    @staticmethod
    def _describe_settings(settings: GuildSettings) -> str:
        roles = ", ".join(f"<@&{r}>" for r in settings.paid_roles) or "everyone"
        return "\n".join(
            [
                f"voice: {settings.voice or 'Oyez default'}",
                f"provider: {settings.provider or 'Oyez default'}",
                f"max length: {settings.max_length or 'Oyez default'}",
                f"paid providers: {roles}",
                f"idle timeout: {settings.idle_timeout_s or 'Oyez default'}",
                f'"<name> said": {"on" if settings.name_prefix else "off"}',
                f"voice channel chat read: {'on' if settings.read_voice_chat else 'off'}",
            ]
        )

    # -- voices ------------------------------------------------------------------------------

    def named_voices(self) -> list[tuple[str, NamedVoice]]:
        return sorted(self.pipeline.settings.voices.items())

    async def _all_voices(self, only: str | None = None) -> list[Voice]:
        """Voices of every usable provider (a provider that cannot answer within 2 s, or is
        not configured, is left out)."""
        registry = self.pipeline.registry
        names = [only] if only else registry.names()
        providers = []
        for name in names:
            try:
                provider = registry.get(name)
            except (InvalidRequest, ConfigError):
                continue
            if provider.configuration_problem() is None:
                providers.append(provider)

        async def listed(provider: Provider) -> list[Voice]:
            try:
                async with asyncio.timeout(2):
                    return await provider.list_voices()
            except (OyezError, TimeoutError) as exc:
                log.info("voices of %s left out: %s", provider.name, exc)
                return []

        results = await asyncio.gather(*(listed(p) for p in providers))
        return [voice for voices in results for voice in voices]

    async def voice_choices(self, current: str) -> list[app_commands.Choice[str]]:
        """Up to 25 voices matching what is typed, named voices first (Discord's limit)."""
        wanted = current.casefold().strip()
        choices = [
            app_commands.Choice(name=f"{name} — named voice ({nv.provider})"[:100], value=name)
            for name, nv in self.named_voices()
            if wanted in name
        ]
        for v in await self._all_voices():
            text = f"{v.id} {v.name} {v.provider} {v.model} {v.language or ''}".casefold()
            if wanted in text:
                label = f"{v.name} — {v.provider}/{v.model}" + (
                    f" ({v.language})" if v.language else ""
                )
                choices.append(
                    app_commands.Choice(name=label[:100], value=f"{v.provider}|{v.model}|{v.id}")
                )
            if len(choices) >= 25:
                break
        return choices[:25]

    async def set_voice(self, interaction: discord.Interaction, value: str) -> None:
        provider, model, voice = _parse_voice(value, None)
        try:
            prepared = await self.pipeline.prepare(
                SpeechRequest.build(text="voice check", provider=provider, model=model, voice=voice)
            )
        except (InvalidRequest, ConfigError) as exc:
            await interaction.response.send_message(f"⚠️ {exc}", ephemeral=True)
            return
        if value.casefold() in self.pipeline.settings.voices:
            choice = VoiceChoice(prepared.provider.name, None, value)
        else:
            v = prepared.voice
            choice = VoiceChoice(v.provider, v.model, v.id)
        await self.preferences.set_voice(interaction.user.id, choice)
        await interaction.response.send_message(
            f"You now speak with {prepared.voice.name} ({prepared.voice.label}).", ephemeral=True
        )

    async def say(
        self,
        interaction: discord.Interaction,
        text: str,
        voice: str | None,
        provider: str | None,
    ) -> None:
        # an interaction's snowflake holds when it was made: the queue keeps that order, and a
        # request waits for the ones asked before it to be queued (or refused) first
        arrived = (discord.utils.snowflake_time(interaction.id).timestamp() * 1000, interaction.id)
        guild_id = interaction.guild_id or 0
        turns = self._turns.setdefault(guild_id, [])
        turns.append(arrived)
        try:
            await self._say(interaction, text, voice, provider, arrived)
        finally:
            turns.remove(arrived)
            self._turn_taken.set()

    async def _wait_turn(self, guild_id: int, arrived: tuple[float, int]) -> None:
        while min(self._turns.get(guild_id) or [arrived]) < arrived:
            self._turn_taken.clear()
            await self._turn_taken.wait()

    async def _say(
        self,
        interaction: discord.Interaction,
        text: str,
        voice: str | None,
        provider: str | None,
        arrived: tuple[float, int],
    ) -> None:
        channel = await self._caller_channel(interaction)
        if channel is None or interaction.guild is None:
            return
        user = interaction.user
        server = await self.guild_settings.get(interaction.guild.id)
        if server.max_length is not None and len(text) > server.max_length:
            await interaction.response.send_message(
                f"⚠️ That is {len(text)} characters; this server allows {server.max_length}.",
                ephemeral=True,
            )
            return
        if server.name_prefix:
            text = f"{user.display_name} said: {text}"
        model = None
        chosen = await self.preferences.voice_of(user.id) if voice is None else None
        if chosen is not None and provider in (None, chosen.provider):
            provider, model, voice = chosen.provider, chosen.model, chosen.voice
            if voice.casefold() in self.pipeline.settings.voices:
                provider = None  # a named voice brings its own provider
        elif voice is None and provider in (None, server.provider):
            provider, model, voice = _parse_voice(server.voice, provider or server.provider)
        deferred = False

        async def answer(message: str) -> None:
            """Bad news for the caller: ephemeral if still possible, else in the reply."""
            if deferred:
                await interaction.edit_original_response(content=message)
            else:
                await interaction.response.send_message(message, ephemeral=True)

        try:
            request = SpeechRequest.build(
                text=text,
                voice=voice,
                provider=provider,
                model=model,
                source=RequestSource.DISCORD,
                requester=f"discord:{user.id}",
                guild=str(interaction.guild.id),
            )
            try:
                # bad input is answered first, privately; but Discord wants an answer within
                # 3 s, and a cloud provider's voice list may take a while to fetch
                async with asyncio.timeout(PREPARE_BUDGET_S):
                    prepared = await self.pipeline.prepare(request)
            except TimeoutError:
                await interaction.response.defer(thinking=True)
                deferred = True
                prepared = await self.pipeline.prepare(request)
        except (InvalidRequest, ConfigError) as exc:
            await answer(f"⚠️ {exc}")
            return
        if prepared.provider.paid and server.paid_roles:
            roles = {role.id for role in getattr(user, "roles", [])}
            if not roles & set(server.paid_roles):
                await answer(
                    f"⚠️ {prepared.provider.name} is a paid provider; on this server it needs "
                    "one of the roles set with /settings."
                )
                return
        if not deferred:
            await interaction.response.defer(thinking=True)
        await self._wait_turn(interaction.guild.id, arrived)
        try:
            player = await self._player(interaction.guild, channel)
        except (discord.DiscordException, TimeoutError) as exc:
            await interaction.edit_original_response(content=f"⚠️ Cannot join voice: {exc}")
            return
        self._interactions[request.id] = interaction
        position = player.enqueue(request, label=user.display_name, arrived=arrived)
        if position:
            await interaction.edit_original_response(
                content=f"⏳ Queued ({position} before it): {request.text}"
            )

    async def close(self) -> None:
        for guild_id in list(self.players):
            player = self.players.pop(guild_id)
            await player.close()
        await super().close()
        await self.preferences.close()
        await self.guild_settings.close()
