"""A simulated Discord that shards: many generated guilds over ``shard_count`` gateway
connections, as Discord documents it (discord-api-docs ``gateway.mdx`` §Sharding,
``topics/gateway.mdx`` §Session Start Limit):

- ``GET /gateway/bot`` answers ``shards`` (the recommended count) and ``session_start_limit``
  with ``max_concurrency``;
- each connection IDENTIFYs with ``shard: [id, count]``; a wrong count, or a shard id out of
  range, closes it with 4010 (invalid shard); a bucket (``id % max_concurrency``) that
  identifies twice within :data:`IDENTIFY_WINDOW_S` gets op 9 (invalid session, not
  resumable), counted in :attr:`ShardedDiscord.invalid_sessions`;
- READY lists the guilds of that shard only, ``(guild_id >> 22) % shard_count``, and each of
  their GUILD_CREATEs (and later events: interactions, voice) go on that connection only.

Each generated guild is the fixed guild of :mod:`.payloads` (alice in its voice channel) with
its own ids: the guild ``g``, its text channel ``g + 1``, voice ``g + 2``, lounge ``g + 3``,
stage ``g + 4``. Voice sessions of several guilds at once share :attr:`FakeDiscord.voice`;
:meth:`ShardedDiscord.packets_of` picks out one guild's RTP packets.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord import payloads
from tests.fakes.discord.payloads import ALICE, BOT, FakeUser
from tests.fakes.discord.server import (
    DISPATCH,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    IDENTIFY,
    INVALID_SESSION,
    PRESENCE,
    REQUEST_MEMBERS,
    RESUME,
    VOICE_STATE,
    FakeDiscord,
    GatewayOp,
    SentInteraction,
    json_response,
)
from tests.fakes.discord.voice import RtpPacket

__all__ = ["IDENTIFY_WINDOW_S", "Identify", "ShardedDiscord", "guild_shard"]

log = logging.getLogger(__name__)

#: Discord's window: one IDENTIFY per bucket per 5 s.
IDENTIFY_WINDOW_S = 5.0
INVALID_SHARD = 4010  # gateway close code
#: The first generated guild's id, shifted 22 bits (a snowflake's timestamp part).
FIRST_GUILD = 1_000_000

_FIXED_IDS = (
    payloads.GUILD_ID,
    payloads.TEXT_CHANNEL_ID,
    payloads.VOICE_CHANNEL_ID,
    payloads.LOUNGE_CHANNEL_ID,
    payloads.STAGE_CHANNEL_ID,
)


def guild_shard(guild_id: int | str, shard_count: int) -> int:
    """Discord's formula: the shard that receives ``guild_id``'s events."""
    return (int(guild_id) >> 22) % shard_count


def rebased(data: Any, guild_id: int) -> Any:
    """``data`` (a payload of the fixed guild) with the fixed guild's and channels' ids
    replaced by ``guild_id``'s."""
    ids = {fixed: str(guild_id + n) for n, fixed in enumerate(_FIXED_IDS)}
    if isinstance(data, str):
        return ids.get(data, data)
    if isinstance(data, Mapping):
        return {key: rebased(value, guild_id) for key, value in data.items()}
    if isinstance(data, list):
        return [rebased(item, guild_id) for item in data]
    return data


@dataclass(frozen=True)
class Identify:
    """One IDENTIFY: its shard, when (``time.monotonic()``) and whether it was refused."""

    shard_id: int
    time: float
    invalid: bool


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    shard_id: int | None = None
    seq: int = 0
    dispatched: list[tuple[str, Any]] = field(default_factory=list)


class ShardedDiscord(FakeDiscord):
    """:class:`FakeDiscord` with ``guilds`` generated guilds over ``shard_count`` shards.

    Logs: :attr:`hellos`, :attr:`identifies`, :attr:`invalid_sessions` (shard ids refused
    with op 9), :attr:`guild_creates` (guild id → the shards it was sent on)."""

    def __init__(
        self,
        *,
        guilds: int = 1000,
        shard_count: int = 4,
        max_concurrency: int = 1,
        members: list[FakeUser] | None = None,
    ) -> None:
        super().__init__(members=members)
        self.shard_count = shard_count
        self.max_concurrency = max_concurrency
        self.guild_ids = [(FIRST_GUILD + n) << 22 for n in range(guilds)]
        self.identifies: list[Identify] = []
        #: When each gateway connection was greeted (HELLO sent), ``time.monotonic()``.
        self.hellos: list[float] = []
        self.invalid_sessions: list[int] = []
        self.guild_creates: dict[int, list[int]] = defaultdict(list)
        self.guild_voice: dict[int, dict[str, str | None]] = {}
        self._shards: dict[int, _Connection] = {}
        self._last_identify: dict[int, float] = {}

    async def _get_gateway(self, request: web.Request) -> web.Response:  # noqa: ARG002 - an aiohttp handler
        limits = {
            "total": 1000,
            "remaining": 1000 - len(self.identifies),
            "reset_after": 86_400_000,
            "max_concurrency": self.max_concurrency,
        }
        body = {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limits}
        return json_response(body)

    # -- the gateway, one connection per shard ---------------------------------------------
    async def _gateway_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = _Connection(ws)
        try:
            await self._send_to(connection, {"op": HELLO, "d": {"heartbeat_interval": 41_250}})
            self.hellos.append(time.monotonic())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_shard_message(connection, json.loads(msg.data))
        finally:
            if connection.shard_id is not None and self._shards.get(connection.shard_id) is (
                connection
            ):
                del self._shards[connection.shard_id]
        return ws

    async def _send_to(self, connection: _Connection, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await connection.ws.send_str(json.dumps(message))

    async def _on_shard_message(self, connection: _Connection, msg: dict[str, Any]) -> None:
        op, d = int(msg["op"]), msg.get("d") or {}
        self.gateway_ops.append(GatewayOp(time.monotonic(), op, d))
        if op == HEARTBEAT:
            await self._send_to(connection, {"op": HEARTBEAT_ACK, "d": None})
        elif op == IDENTIFY:
            await self._identify(connection, d)
        elif op == RESUME:
            await self._dispatch_on(connection, "RESUMED", {})
        elif op == VOICE_STATE:
            await self._guild_voice_state(d)
        elif op not in (PRESENCE, REQUEST_MEMBERS):
            log.warning("ShardedDiscord: unhandled gateway op %s: %r", op, d)

    async def _identify(self, connection: _Connection, d: dict[str, Any]) -> None:
        shard_id, count = d.get("shard") or [0, 1]
        if count != self.shard_count or not 0 <= shard_id < count:
            await connection.ws.close(code=INVALID_SHARD, message=b"Invalid shard.")
            return
        now = time.monotonic()
        bucket = shard_id % self.max_concurrency
        last = self._last_identify.get(bucket)
        invalid = last is not None and now - last < IDENTIFY_WINDOW_S
        self.identifies.append(Identify(shard_id, now, invalid))
        if invalid:
            self.invalid_sessions.append(shard_id)
            await self._send_to(connection, {"op": INVALID_SESSION, "d": False})
            return
        self._last_identify[bucket] = now
        connection.shard_id = shard_id
        self._shards[shard_id] = connection
        mine = [g for g in self.guild_ids if guild_shard(g, self.shard_count) == shard_id]
        ready = payloads.ready(
            session_id=f"{self.session_id}-{shard_id}",
            resume_url=self.gateway_url,
            guild_ids=[str(g) for g in mine],
        ) | {"shard": [shard_id, count]}
        await self._dispatch_on(connection, "READY", ready)
        for guild_id in mine:
            voice = self.guild_voice.setdefault(guild_id, {ALICE.id: payloads.VOICE_CHANNEL_ID})
            guild = rebased(payloads.guild_create(self.members, voice), guild_id)
            self.guild_creates[guild_id].append(shard_id)
            await self._dispatch_on(connection, "GUILD_CREATE", guild)
        self.identified.set()

    async def _dispatch_on(self, connection: _Connection, event: str, data: Any) -> None:
        connection.seq += 1
        connection.dispatched.append((event, data))
        self.dispatched.append((event, data))
        message = {"op": DISPATCH, "t": event, "s": connection.seq, "d": data}
        await self._send_to(connection, message)

    async def dispatch_in(self, guild_id: int, event: str, data: Any) -> None:
        """Send ``event`` on the shard that owns ``guild_id``; raises RuntimeError when that
        shard is not connected."""
        shard_id = guild_shard(guild_id, self.shard_count)
        connection = self._shards.get(shard_id)
        if connection is None:
            raise RuntimeError(f"shard {shard_id} (of guild {guild_id}) is not connected")
        await self._dispatch_on(connection, event, data)

    async def _guild_voice_state(self, d: dict[str, Any]) -> None:
        guild_id = int(d["guild_id"])
        channel_id = None if d.get("channel_id") is None else str(d["channel_id"])
        self.guild_voice.setdefault(guild_id, {})[BOT.id] = channel_id
        state = payloads.voice_state(
            BOT, channel_id, session_id=self.session_id, guild_id=str(guild_id), with_member=True
        )
        await self.dispatch_in(guild_id, "VOICE_STATE_UPDATE", state)
        if channel_id is not None:
            token = secrets.token_hex(8)
            self.voice_tokens.append(token)
            self.voice.grant(token, channel_id)
            server = {"token": token, "guild_id": str(guild_id), "endpoint": self.voice.endpoint}
            await self.dispatch_in(guild_id, "VOICE_SERVER_UPDATE", server)

    # -- test API ----------------------------------------------------------------------------
    def connected_shards(self) -> list[int]:
        return sorted(self._shards)

    async def send_interaction_in(
        self, guild_id: int, name: str, options: Mapping[str, Any], *, user: FakeUser = ALICE
    ) -> SentInteraction:
        """INTERACTION_CREATE for the global command ``/name`` in ``guild_id``'s text channel,
        on the guild's shard."""
        (command,) = [c for c in self.commands.get(None, []) if c["name"] == name]
        interaction_id, token = self.snowflake(), "tok-" + secrets.token_hex(8)
        options_json = [
            {"name": key, "type": payloads.option_type(value), "value": value}
            for key, value in options.items()
        ]
        payload = payloads.interaction_create(
            interaction_id=interaction_id,
            token=token,
            command_id=command["id"],
            name=name,
            options=options_json,
            user=user,
            channel_id=payloads.TEXT_CHANNEL_ID,
        )
        payload = rebased(payload, guild_id) | {"id": interaction_id, "token": token}
        sent = SentInteraction(interaction_id, token, name, payload, time.monotonic())
        self.interactions.append(sent)
        await self.dispatch_in(guild_id, "INTERACTION_CREATE", payload)
        return sent

    def packets_of(self, guild_id: int) -> list[RtpPacket]:
        """The RTP packets of the voice sessions of ``guild_id`` (their IDENTIFY's
        ``server_id``)."""
        ssrcs = {
            s.ssrc
            for s in self.voice.sessions
            if s.identify is not None and str(s.identify.get("server_id")) == str(guild_id)
        }
        return [p for p in self.voice.packets if p.ssrc in ssrcs]
