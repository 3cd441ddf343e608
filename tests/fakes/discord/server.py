"""A simulated Discord: REST (``/api/v10``), the gateway websocket (``/gateway``) and voice.

Serves on 127.0.0.1 at an ephemeral port, one guild as described in
:mod:`tests.fakes.discord.payloads`. discord.py is pointed at it by
:mod:`tests.fakes.discord.client`::

    async with FakeDiscord() as fake, patched_discord(fake):
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(),
                           **client_options())
        async with running(bot):
            sent = await fake.send_interaction("say", {"text": "hello"})
            response = await fake.wait_for_response(sent)      # the defer (type 5) ...
            followup = await fake.wait_for_followup(sent)

REST routes (everything else is logged in :attr:`FakeDiscord.unknown_routes`, logged at WARNING
and answered 404 JSON): ``GET /users/@me``, ``GET /oauth2/applications/@me``,
``GET|PUT /applications/{app}/commands`` and ``.../guilds/{guild}/commands`` (sync),
``POST /interactions/{id}/{token}/callback`` (answered 200 JSON: a 204 breaks discord.py),
``POST /webhooks/{app}/{token}`` (followups), ``GET|PATCH|DELETE
/webhooks/{app}/{token}/messages/{id|@original}``, ``POST /channels/{id}/messages``,
``GET /gateway`` and ``GET /gateway/bot``. Every JSON answer has the Content-Type exactly
``application/json`` (discord.py compares the header; ``; charset=utf-8`` breaks login). A
message (response, followup, edit) of over :data:`MESSAGE_MAX_CHARS` characters is refused with
400, as Discord does.

Gateway: HELLO, IDENTIFY → READY then GUILD_CREATE, heartbeat op 1 → op 11, op 4 voice state
updates → VOICE_STATE_UPDATE (+ VOICE_SERVER_UPDATE pointing at :attr:`FakeDiscord.voice` when
joining; moving to another channel also closes the old voice websocket with 4014). Frames are
plain text (discord.py only decompresses binary frames). Every op the client sends is in
:attr:`FakeDiscord.gateway_ops`.

Over 450 lines: REST, gateway and voice share the one guild's state.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from aiohttp import WSMsgType, web

from tests.fakes.base import FakeServer
from tests.fakes.discord import payloads
from tests.fakes.discord.payloads import ALICE, BOT, GUILD_ID, TEXT_CHANNEL_ID, FakeUser
from tests.fakes.discord.voice import FakeVoiceServer

__all__ = [
    "FakeDiscord",
    "Followup",
    "GatewayOp",
    "InteractionResponse",
    "SentInteraction",
    "SyncCall",
]

log = logging.getLogger(__name__)

API = "/api/v10"
T = TypeVar("T")

# gateway opcodes
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME = 0, 1, 2, 3, 4, 6
RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 7, 8, 9, 10, 11
DISCONNECTED = 4014  # voice close code: the bot was disconnected from the channel


@dataclass(frozen=True)
class GatewayOp:
    """One gateway message the client sent (``time`` is ``time.monotonic()``)."""

    time: float
    op: int
    d: Any


@dataclass(frozen=True)
class SyncCall:
    """One command sync: ``guild_id`` is None for global commands."""

    guild_id: str | None
    commands: list[dict[str, Any]]

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.commands]


@dataclass(frozen=True)
class SentInteraction:
    """An INTERACTION_CREATE the fake dispatched."""

    id: str
    token: str
    name: str
    payload: dict[str, Any]
    time: float


@dataclass(frozen=True)
class InteractionResponse:
    """The first response to an interaction (``type`` 4 = message, 5 = deferred, ...)."""

    interaction_id: str
    token: str
    type: int
    data: dict[str, Any]
    time: float

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)


@dataclass(frozen=True)
class Followup:
    """A message sent through the interaction webhook: a followup, or an edit of
    ``@original`` (``message_id``), with its payload and attached files (name → bytes)."""

    token: str
    method: str
    message_id: str | None
    payload: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    time: float = 0.0

    @property
    def content(self) -> str | None:
        return self.payload.get("content")


#: The longest message content Discord takes, characters ("up to 2000 characters",
#: https://discord.com/developers/docs/resources/message#create-message).
MESSAGE_MAX_CHARS = 2000


def too_long(payload: Mapping[str, Any]) -> web.Response | None:
    """Discord's 400 (50035 Invalid Form Body) for content over :data:`MESSAGE_MAX_CHARS`."""
    content = payload.get("content")
    if not isinstance(content, str) or len(content) <= MESSAGE_MAX_CHARS:
        return None
    error = {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
    body = {
        "message": "Invalid Form Body",
        "code": 50035,
        "errors": {"content": {"_errors": [error]}},
    }
    return json_response(body, status=400)


def json_response(body: Any, status: int = 200) -> web.Response:
    """JSON with Content-Type exactly ``application/json`` (no charset)."""
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Split discord.py's multipart body into ``payload_json`` and the files."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    payload: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        if name == "payload_json":
            payload = json.loads(data)
        else:
            files[part.get_filename() or str(name)] = data
    return payload, files


class FakeDiscord(FakeServer):
    """The simulated Discord. Logs for tests:

    - :attr:`requests` (every REST request, from :class:`FakeServer`), :attr:`unknown_routes`;
    - :attr:`gateway_ops` (client → gateway), :attr:`dispatched` (gateway → client, ``(t, d)``);
    - :attr:`sync_calls` / :attr:`commands` (the commands registered, global under ``None``);
    - :attr:`interactions`, :attr:`interaction_responses`, :attr:`followups`;
    - :attr:`channel_messages` (``POST /channels/{id}/messages``);
    - :attr:`voice_states` (user id → voice channel id) and :attr:`voice` (the voice server).

    ``dave``: the voice server offers DAVE end-to-end encryption (protocol version 1).
    """

    secret_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})

    def __init__(
        self,
        *,
        members: list[FakeUser] | None = None,
        voice_states: Mapping[str, str | None] | None = None,
        dave: bool = False,
    ) -> None:
        super().__init__()
        self.members = members or [ALICE, BOT]
        self.voice_states: dict[str, str | None] = dict(
            voice_states if voice_states is not None else {ALICE.id: payloads.VOICE_CHANNEL_ID}
        )
        self.voice = FakeVoiceServer(dave_protocol_version=1 if dave else 0)
        self.session_id = secrets.token_hex(8)
        self.gateway_ops: list[GatewayOp] = []
        self.dispatched: list[tuple[str, Any]] = []
        self.unknown_routes: list[str] = []
        self.sync_calls: list[SyncCall] = []
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.interactions: list[SentInteraction] = []
        self.interaction_responses: list[InteractionResponse] = []
        self.followups: list[Followup] = []
        self.channel_messages: list[dict[str, Any]] = []
        #: Whether the bot may make itself a stage speaker (Mute Members); its PATCHes of
        #: ``voice-states/@me`` are in ``my_voice_state_edits``.
        self.stage_moderator = True
        self.my_voice_state_edits: list[dict[str, Any]] = []
        self.voice_tokens: list[str] = []
        self.identified = asyncio.Event()
        self._ids = itertools.count(10_000)
        self._gateway: web.WebSocketResponse | None = None
        self._seq = 0
        self._send_lock = asyncio.Lock()

    def snowflake(self) -> str:
        return str(next(self._ids))

    # -- serving -------------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/gateway"

    @property
    def api_base(self) -> str:
        return self.base_url + API

    async def start(self) -> FakeDiscord:
        await self.voice.start()
        await super().start()
        return self

    async def stop(self) -> None:
        if self._gateway is not None:
            await self._gateway.close()
        await super().stop()
        await self.voice.stop()

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/gateway", self._gateway_socket)
        r.add_get(API + "/gateway", self._get_gateway)
        r.add_get(API + "/gateway/bot", self._get_gateway)
        r.add_get(API + "/users/@me", self._users_me)
        r.add_get(API + "/oauth2/applications/@me", self._application)
        r.add_get(API + "/applications/{app}/commands", self._get_commands)
        r.add_put(API + "/applications/{app}/commands", self._sync_commands)
        r.add_get(API + "/applications/{app}/guilds/{guild}/commands", self._get_commands)
        r.add_put(API + "/applications/{app}/guilds/{guild}/commands", self._sync_commands)
        r.add_post(API + "/interactions/{id}/{token}/callback", self._callback)
        r.add_post(API + "/webhooks/{app}/{token}", self._followup)
        r.add_route("*", API + "/webhooks/{app}/{token}/messages/{message}", self._webhook_message)
        r.add_post(API + "/channels/{channel}/messages", self._channel_message)
        r.add_patch(API + "/guilds/{guild}/voice-states/@me", self._my_voice_state)
        r.add_route("*", "/{tail:.*}", self._unknown)

    # -- REST ----------------------------------------------------------------------------------
    async def _unknown(self, request: web.Request) -> web.Response:
        route = f"{request.method} {request.path_qs}"
        self.unknown_routes.append(route)
        log.warning("FakeDiscord: unknown route %s (answered 404)", route)
        return json_response({"message": f"404: Not Found ({route})", "code": 0}, 404)

    async def _get_gateway(self, request: web.Request) -> web.Response:  # noqa: ARG002 - an aiohttp handler
        limits = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limits})

    async def _users_me(self, request: web.Request) -> web.Response:  # noqa: ARG002 - an aiohttp handler
        return json_response(BOT.to_json() | {"verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self, request: web.Request) -> web.Response:  # noqa: ARG002 - an aiohttp handler
        return json_response(
            {
                "id": BOT.id,
                "name": BOT.username,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": ALICE.to_json(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "rpc_origins": [],
                "summary": "",
            }
        )

    def _command_json(self, command: dict[str, Any], guild_id: str | None) -> dict[str, Any]:
        existing = next(
            (c for c in self.commands.get(guild_id, []) if c["name"] == command["name"]), None
        )
        data = dict(command)
        data["id"] = existing["id"] if existing else self.snowflake()
        data["application_id"] = BOT.id
        data["version"] = self.snowflake()
        data.setdefault("type", 1)
        data.setdefault("description", "")
        data.setdefault("default_member_permissions", None)
        if guild_id is not None:
            data["guild_id"] = guild_id
        return data

    async def _get_commands(self, request: web.Request) -> web.Response:
        return json_response(self.commands.get(request.match_info.get("guild"), []))

    async def _sync_commands(self, request: web.Request) -> web.Response:
        guild_id = request.match_info.get("guild")
        body = await request.json()
        self.sync_calls.append(SyncCall(guild_id, body))
        self.commands[guild_id] = [self._command_json(c, guild_id) for c in body]
        return json_response(self.commands[guild_id])

    async def _callback(self, request: web.Request) -> web.Response:
        interaction_id, token = request.match_info["id"], request.match_info["token"]
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            body, files = _multipart(ctype, await request.read())
        else:
            body, files = await request.json(), {}
        refused = too_long(body.get("data") or {})
        if refused is not None:
            return refused
        response = InteractionResponse(
            interaction_id, token, int(body["type"]), body.get("data") or {}, time.monotonic()
        )
        self.interaction_responses.append(response)
        if response.type == 4:
            self.followups.append(
                Followup(token, "CALLBACK", "@original", response.data, files, time.monotonic())
            )
        result: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_id": None,
                "response_message_loading": response.type == 5,
                "response_message_ephemeral": response.ephemeral,
            }
        }
        if response.type in (4, 5):
            result["resource"] = {
                "type": response.type,
                "message": self._webhook_msg(response.data),
            }
        return json_response(result)

    def _webhook_msg(self, payload: Mapping[str, Any], message_id: str | None = None) -> Any:
        return payloads.message(
            message_id=message_id or self.snowflake(),
            channel_id=TEXT_CHANNEL_ID,
            author=BOT,
            content=str(payload.get("content") or ""),
            timestamp=_now_iso(),
            webhook_id=BOT.id,
        ) | {"flags": int(payload.get("flags") or 0)}

    async def _read_payload(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        ctype = request.headers.get("Content-Type", "")
        raw = await request.read()
        if ctype.startswith("multipart/"):
            return _multipart(ctype, raw)
        return (json.loads(raw) if raw else {}), {}

    async def _followup(self, request: web.Request) -> web.Response:
        payload, files = await self._read_payload(request)
        if (refused := too_long(payload)) is not None:
            return refused
        followup = Followup(
            request.match_info["token"], "POST", None, payload, files, time.monotonic()
        )
        self.followups.append(followup)
        return json_response(self._webhook_msg(payload))

    async def _webhook_message(self, request: web.Request) -> web.Response:
        token, message_id = request.match_info["token"], request.match_info["message"]
        if request.method == "DELETE":
            self.followups.append(Followup(token, "DELETE", message_id, {}, {}, time.monotonic()))
            return web.Response(status=204)
        if request.method == "GET":
            edits = [f for f in self.followups if f.token == token and f.message_id == message_id]
            payload = edits[-1].payload if edits else {}
            return json_response(self._webhook_msg(payload, self.snowflake()))
        payload, files = await self._read_payload(request)
        if (refused := too_long(payload)) is not None:
            return refused
        self.followups.append(
            Followup(token, request.method, message_id, payload, files, time.monotonic())
        )
        return json_response(self._webhook_msg(payload))

    async def _channel_message(self, request: web.Request) -> web.Response:
        payload, _ = await self._read_payload(request)
        if (refused := too_long(payload)) is not None:
            return refused
        payload = payload | {"channel_id": request.match_info["channel"]}
        self.channel_messages.append(payload)
        return json_response(
            payloads.message(
                message_id=self.snowflake(),
                channel_id=request.match_info["channel"],
                author=BOT,
                content=str(payload.get("content") or ""),
                timestamp=_now_iso(),
            )
        )

    # -- gateway -------------------------------------------------------------------------------
    async def _my_voice_state(self, request: web.Request) -> web.Response:
        """Modify Current User Voice State: in a stage, ``suppress: false`` makes the bot a
        speaker (Mute Members needed: without :attr:`stage_moderator`, 403 code 50013, as
        Discord answers), ``request_to_speak_timestamp`` raises its hand."""
        payload = await request.json()
        self.my_voice_state_edits.append(payload)
        if self.voice_states.get(BOT.id) != payloads.STAGE_CHANNEL_ID:
            return json_response({"message": "Cannot modify a non-stage channel", "code": 0}, 400)
        unsuppress = payload.get("suppress") is False
        if unsuppress and not self.stage_moderator:
            return json_response({"message": "Missing Permissions", "code": 50013}, 403)
        state = payloads.voice_state(
            BOT,
            payloads.STAGE_CHANNEL_ID,
            session_id=self.session_id,
            with_member=True,
            suppress=not unsuppress,
        )
        state["self_deaf"] = True
        state["request_to_speak_timestamp"] = payload.get("request_to_speak_timestamp")
        await self.dispatch("VOICE_STATE_UPDATE", state)
        return web.Response(status=204)

    async def _gateway_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._gateway, self._seq = ws, 0
        self.identified.clear()
        try:
            await self._send(ws, {"op": HELLO, "d": {"heartbeat_interval": 41_250}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_gateway(ws, json.loads(msg.data))
                else:
                    log.warning("FakeDiscord: unexpected gateway frame %s", msg.type)
        finally:
            if self._gateway is ws:
                self._gateway = None
                self.identified.clear()
        return ws

    async def _send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await ws.send_str(json.dumps(message))

    async def _on_gateway(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        op, d = int(msg["op"]), msg.get("d") or {}
        self.gateway_ops.append(GatewayOp(time.monotonic(), op, d))
        if op == HEARTBEAT:
            await self._send(ws, {"op": HEARTBEAT_ACK, "d": None})
        elif op == IDENTIFY:
            ready = payloads.ready(
                session_id=self.session_id, resume_url=self.gateway_url, guild_ids=[GUILD_ID]
            )
            await self.dispatch("READY", ready)
            await self.dispatch(
                "GUILD_CREATE", payloads.guild_create(self.members, self.voice_states)
            )
            self.identified.set()
        elif op == RESUME:
            await self.dispatch("RESUMED", {})
            self.identified.set()
        elif op == VOICE_STATE:
            await self._on_voice_state(d)
        elif op in (PRESENCE, REQUEST_MEMBERS):
            pass
        else:
            log.warning("FakeDiscord: unhandled gateway op %s: %r", op, d)

    async def _on_voice_state(self, d: dict[str, Any]) -> None:
        channel_id = None if d.get("channel_id") is None else str(d["channel_id"])
        guild_id = str(d["guild_id"])
        previous = self.voice_states.get(BOT.id)
        self.voice_states[BOT.id] = channel_id
        state = payloads.voice_state(
            BOT, channel_id, session_id=self.session_id, guild_id=guild_id, with_member=True
        )
        state["self_mute"], state["self_deaf"] = bool(d.get("self_mute")), bool(d.get("self_deaf"))
        await self.dispatch("VOICE_STATE_UPDATE", state)
        if channel_id is not None:
            token = secrets.token_hex(8)
            self.voice_tokens.append(token)
            self.voice.grant(token, channel_id)
            await self.dispatch(
                "VOICE_SERVER_UPDATE",
                {"token": token, "guild_id": guild_id, "endpoint": self.voice.endpoint},
            )
            if previous not in (None, channel_id):
                # moving to another channel ends the voice session in the old one
                await self.voice.drop_connections(DISCONNECTED)

    async def dispatch(self, event: str, data: Any) -> None:
        """Send a DISPATCH (op 0) to the connected client."""
        ws = self._gateway
        if ws is None:
            raise RuntimeError("no gateway connection: is the client running?")
        self._seq += 1
        self.dispatched.append((event, data))
        await self._send(ws, {"op": DISPATCH, "t": event, "s": self._seq, "d": data})

    # -- test API: pushing events --------------------------------------------------------------
    async def send_interaction(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser = ALICE,
        channel: str = TEXT_CHANNEL_ID,
        permissions: str = payloads.ALL_PERMISSIONS,
        subcommand: str | None = None,
    ) -> SentInteraction:
        """Dispatch INTERACTION_CREATE for the slash command ``/name`` with ``options``
        (``/name subcommand`` with them when given), by ``user`` with ``permissions``.

        The command must have been synced (globally or for the guild): its id, and ``guild_id``
        for a guild command, come from the sync. A :class:`FakeUser` option is a user option.
        """
        await self.wait_identified()
        command, guild_id = self._find_command(name)
        interaction_id, token = self.snowflake(), "tok-" + secrets.token_hex(8)
        options_json = [
            {
                "name": key,
                "type": payloads.option_type(value),
                "value": getattr(value, "id", value),  # role and channel options send ids
            }
            for key, value in (options or {}).items()
        ]
        if subcommand is not None:
            options_json = [{"name": subcommand, "type": 1, "options": options_json}]
        payload = payloads.interaction_create(
            interaction_id=interaction_id,
            token=token,
            command_id=command["id"],
            name=name,
            options=options_json,
            user=user,
            channel_id=channel,
            command_guild_id=guild_id,
            resolved_data=payloads.resolved(list((options or {}).values())),
            permissions=permissions,
        )
        sent = SentInteraction(interaction_id, token, name, payload, time.monotonic())
        self.interactions.append(sent)
        await self.dispatch("INTERACTION_CREATE", payload)
        return sent

    def _find_command(self, name: str) -> tuple[dict[str, Any], str | None]:
        for guild_id in (GUILD_ID, None):
            for command in self.commands.get(guild_id, []):
                if command["name"] == name:
                    return command, guild_id
        raise LookupError(f"/{name} was never synced (synced: {self.commands})")

    async def send_message(
        self, content: str, *, user: FakeUser = ALICE, channel: str = TEXT_CHANNEL_ID
    ) -> dict[str, Any]:
        """Dispatch MESSAGE_CREATE (a user writing in a channel); returns the message.

        ``channel`` may be a voice channel's id: a message in its text chat.
        """
        await self.wait_identified()
        data = payloads.message(
            message_id=self.snowflake(),
            channel_id=channel,
            author=user,
            content=content,
            timestamp=_now_iso(),
        )
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def move_member(self, user: FakeUser, channel: str | None) -> None:
        """A member joins, moves to, or (``None``) leaves a voice channel.

        For the bot this is a moderator moving or disconnecting it: a move also sends
        VOICE_SERVER_UPDATE (the client connects to voice anew); either way its voice websocket
        is closed with 4014 (disconnected), as when the bot moves itself (op 4).
        """
        await self.wait_identified()
        self.voice_states[user.id] = channel
        session_id = self.session_id if user == BOT else f"vs-{user.id}"
        await self.dispatch(
            "VOICE_STATE_UPDATE",
            payloads.voice_state(user, channel, session_id=session_id, with_member=True),
        )
        if user != BOT:
            return
        if channel is not None:
            token = secrets.token_hex(8)
            self.voice_tokens.append(token)
            self.voice.grant(token, channel)
            await self.dispatch(
                "VOICE_SERVER_UPDATE",
                {"token": token, "guild_id": GUILD_ID, "endpoint": self.voice.endpoint},
            )
        await self.voice.drop_connections(DISCONNECTED)

    # -- test API: queries and waits -----------------------------------------------------------
    async def wait_identified(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self.identified.wait()

    async def wait_for(
        self, probe: Callable[[], T | None], *, timeout_s: float = 5.0, what: str = "condition"
    ) -> T:
        """Poll ``probe`` until it returns something truthy; TimeoutError names ``what``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"FakeDiscord: timed out after {timeout_s} s waiting for {what}")
            await asyncio.sleep(0.01)

    def ops(self, op: int) -> list[Any]:
        """The ``d`` of every gateway message with opcode ``op`` the client sent."""
        return [o.d for o in self.gateway_ops if o.op == op]

    def voice_state_updates(self) -> list[dict[str, Any]]:
        """The client's op 4 payloads (join: ``channel_id`` set; leave: ``channel_id`` None)."""
        return list(self.ops(VOICE_STATE))

    def responses_to(self, interaction: SentInteraction) -> list[InteractionResponse]:
        return [r for r in self.interaction_responses if r.interaction_id == interaction.id]

    def followups_to(self, interaction: SentInteraction) -> list[Followup]:
        return [f for f in self.followups if f.token == interaction.token]

    async def wait_for_response(
        self, interaction: SentInteraction, timeout_s: float = 5.0
    ) -> InteractionResponse:
        responses = await self.wait_for(
            lambda: self.responses_to(interaction), timeout_s=timeout_s, what="interaction response"
        )
        return responses[0]

    async def wait_for_followup(
        self, interaction: SentInteraction, timeout_s: float = 10.0
    ) -> Followup:
        followups = await self.wait_for(
            lambda: [f for f in self.followups_to(interaction) if f.method == "POST"],
            timeout_s=timeout_s,
            what="followup",
        )
        return followups[0]
