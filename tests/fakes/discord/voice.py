"""A simulated Discord voice server: the voice websocket (v8) and the UDP RTP endpoint.

Handshake, as discord.py 2.7 drives it:

1. The client opens the voice websocket and sends IDENTIFY (op 0, ``server_id``, ``user_id``,
   ``session_id``, ``token``, ``max_dave_protocol_version``); the server has already sent HELLO
   (op 8) and answers READY (op 2: ``ssrc``, ``ip``, ``port``, ``modes``).
2. UDP IP discovery: 74 bytes ``>H 1, >H 70, >I ssrc``; the answer (``>H 2``) carries the
   client's address as seen by the server: ASCII IP NUL-terminated from offset 8, port ``>H`` in
   the last two bytes. It is sent from exactly the READY address (the client ``connect``s).
3. SELECT_PROTOCOL (op 1, ``aead_xchacha20_poly1305_rtpsize``) → SESSION_DESCRIPTION (op 4:
   ``mode``, ``secret_key`` (32 ints), ``dave_protocol_version: 0`` — the key is required; 0
   declines DAVE end-to-end encryption).
4. Heartbeats op 3 → HEARTBEAT_ACK op 6 (without ACKs discord.py gives up after 60 s); SPEAKING
   op 5 (1 at start, 0 at the end).
5. RTP: 12-byte header ``0x80 0x78, >H seq, >I timestamp (+960 per 20 ms), >I ssrc``, then the
   XChaCha20-Poly1305 ciphertext of the Opus frame (header as associated data), then a 4-byte
   nonce suffix: the 24-byte nonce is those 4 bytes followed by 20 zero bytes. After playback
   the client sends five silence frames :data:`OPUS_SILENCE`.

Dropped connections (https://discord.com/developers/docs/topics/voice-connections, "Resuming
Voice Connection"): :meth:`FakeVoiceServer.drop_connections` closes the websockets with a close
code. After 4015 (voice server crashed) the session stays resumable: on a new websocket the client
sends RESUME (op 7: ``server_id``, ``session_id``, ``token``, ``seq_ack``) and the server answers
RESUMED (op 9); the SSRC, the secret key and the UDP flow stay, and no READY or
SESSION_DESCRIPTION is sent again. A RESUME for an unknown or ended session is refused with close
code 4006 (session no longer valid), after which the client must start over through the gateway
(op 4). Server messages carry a ``seq`` (voice gateway v8) that the client acknowledges as
``seq_ack``.

DAVE end-to-end encryption (``dave_protocol_version=1``): see :mod:`tests.fakes.discord.e2ee`;
SESSION_DESCRIPTION then offers version 1 (if the client's IDENTIFY allows it), the DAVE
opcodes 21–31 run on the websocket and each RTP payload is decrypted twice: the transport
encryption here, then the DAVE frame by each of the call's other members (:attr:`RtpPacket.e2ee`
says which frames were end-to-end encrypted). :meth:`FakeVoiceServer.grant` tells the server
which voice channel a token is for (the MLS group is the channel's). As on Discord since March
2026, a client whose IDENTIFY has no ``max_dave_protocol_version`` (or 0) is closed with 4017
(E2EE/DAVE protocol required): the call's other members speak DAVE.

discord.py hard-codes the voice websocket URL as ``wss://{endpoint}/?v=8``; this server speaks
plain ``ws://``, and :func:`tests.fakes.discord.client.attach` rewrites the scheme for it.

Over 450 lines: the websocket, its resume and DAVE's routing share each session's sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

import nacl.exceptions
import nacl.secret
import numpy as np
from aiohttp import WSMsgType, web

from tests.fakes.discord import e2ee
from tests.fakes.discord.e2ee import DaveServer, DaveState
from tests.fakes.discord.payloads import ALICE

__all__ = [
    "AEAD_MODE",
    "OPUS_SILENCE",
    "FakeVoiceServer",
    "RtpPacket",
    "VoiceOp",
    "count_silence",
    "decode_opus",
]

log = logging.getLogger(__name__)

AEAD_MODE = "aead_xchacha20_poly1305_rtpsize"
OPUS_SILENCE = b"\xf8\xff\xfe"
FIRST_SSRC = 4242
HEARTBEAT_INTERVAL_MS = 41_250
#: The UDP socket's receive buffer asked for, bytes.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

# voice gateway opcodes (v8)
IDENTIFY, SELECT_PROTOCOL, READY, HEARTBEAT, SESSION_DESCRIPTION, SPEAKING = 0, 1, 2, 3, 4, 5
HEARTBEAT_ACK, RESUME, HELLO, RESUMED = 6, 7, 8, 9
# voice close codes
NOT_AUTHENTICATED, SESSION_NO_LONGER_VALID, SERVER_CRASHED = 4003, 4006, 4015
DAVE_REQUIRED = 4017  # the channel's call is E2EE and the client does not speak DAVE


@dataclass(frozen=True)
class VoiceOp:
    """One voice websocket message the client sent."""

    time: float
    op: int
    d: Any


@dataclass(frozen=True)
class RtpPacket:
    """One decrypted RTP packet; ``time`` is ``time.monotonic()`` at arrival; ``e2ee``: the
    Opus frame came end-to-end encrypted (DAVE) and the call's other members decrypted it."""

    time: float
    seq: int
    timestamp: int
    ssrc: int
    opus: bytes
    e2ee: bool = False

    @property
    def is_silence(self) -> bool:
        return self.opus == OPUS_SILENCE


@dataclass
class VoiceSession:
    """One voice session: begun by IDENTIFY, carried onto a new websocket by each RESUME.

    ``closed``: its websocket is closed now (a resume opens it again); ``resumable``: a RESUME
    may still pick it up; ``resumes``: the RESUME payloads that did; ``seq``: the last message
    number the server sent on it; ``dave``: its DAVE state (None: DAVE not offered).
    """

    ssrc: int
    secret_key: bytes
    identify: dict[str, Any] | None = None
    mode: str | None = None
    client_address: tuple[str, int] | None = None
    closed: bool = False
    resumable: bool = True
    speaking: list[int] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    dave: DaveState | None = None

    def matches(self, resume: dict[str, Any]) -> bool:
        """Whether a RESUME payload names this session (server, session id and token)."""
        identify = self.identify or {}
        return all(
            str(resume.get(key)) == str(identify.get(key))
            for key in ("server_id", "session_id", "token")
        )


@dataclass(eq=False)
class _Connection:
    """One voice websocket and the session it carries (none before IDENTIFY or RESUME)."""

    ws: web.WebSocketResponse
    session: VoiceSession | None = None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: FakeVoiceServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server._on_datagram(data, (str(addr[0]), int(addr[1])))


class FakeVoiceServer:
    """Voice websocket at ``/`` (any path) plus a UDP socket, both on 127.0.0.1.

    Logs: :attr:`ops` (every websocket message the client sent), :attr:`sessions`,
    :attr:`packets` (decrypted RTP, in arrival order), :attr:`discoveries` (IP discovery
    requests' source addresses) and :attr:`errors` (undecryptable or unexpected datagrams).
    :meth:`drop_connections` simulates a crash or an ended session.
    """

    def __init__(
        self,
        *,
        modes: Iterable[str] = (AEAD_MODE,),
        dave_protocol_version: int = 0,
        dave_listener_id: int = int(ALICE.id),
    ) -> None:
        self.modes = list(modes)
        self.dave_protocol_version = dave_protocol_version
        self.dave = DaveServer(dave_listener_id)
        self.channels: dict[str, int] = {}  # voice token → voice channel id
        self.ops: list[VoiceOp] = []
        self.sessions: list[VoiceSession] = []
        self.packets: list[RtpPacket] = []
        self.discoveries: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.endpoint = ""  # "127.0.0.1:PORT", what VOICE_SERVER_UPDATE announces
        self.udp_port = 0
        self._next_ssrc = FIRST_SSRC
        self._runner: web.AppRunner | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connections: set[_Connection] = set()

    # -- serving -------------------------------------------------------------------------------
    async def start(self) -> Self:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.endpoint = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=("127.0.0.1", 0)
        )
        self._udp = transport
        self.udp_port = transport.get_extra_info("sockname")[1]
        # room for seconds of 50 voices at once (2,500 packets a second) while the test's loop
        # is busy: the default ~208 KiB holds ~0.1 s, and what overflows is lost unheard
        # (one of 50 guilds once lost a sentence's end). Linux caps it at net.core.rmem_max.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        return self

    async def stop(self) -> None:
        for connection in list(self._connections):
            await connection.ws.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- websocket -----------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = _Connection(ws)
        self._connections.add(connection)
        try:
            await self._send(
                connection, HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "v": 8}
            )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_message(connection, json.loads(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await self._on_binary(connection, bytes(msg.data))
        finally:
            if connection.session is not None:
                connection.session.closed = True
            self._connections.discard(connection)
        return ws

    async def _send(self, connection: _Connection, op: int, d: Any) -> None:
        message: dict[str, Any] = {"op": op, "d": d}
        session = connection.session
        if session is not None and op not in (HELLO, HEARTBEAT_ACK):
            session.seq += 1
            message["seq"] = session.seq
        await connection.ws.send_str(json.dumps(message))

    async def _send_binary(self, connection: _Connection, op: int, payload: bytes) -> None:
        """A binary (DAVE) message: ``>H seq``, the opcode byte, the payload."""
        assert connection.session is not None
        connection.session.seq += 1
        seq = connection.session.seq & 0xFFFF
        await connection.ws.send_bytes(struct.pack(">HB", seq, op) + payload)

    async def _send_replies(self, connection: _Connection, replies: list[e2ee.Reply]) -> None:
        for reply in replies:
            if isinstance(reply, e2ee.Binary):
                await self._send_binary(connection, reply.op, reply.payload)
            else:
                await self._send(connection, reply.op, reply.d)

    async def _on_binary(self, connection: _Connection, data: bytes) -> None:
        op, payload = data[0], data[1:]
        self.ops.append(VoiceOp(time.monotonic(), op, payload))
        session = connection.session
        if session is None or session.dave is None:
            log.warning("fake voice: binary (DAVE) op %d without DAVE", op)
            self.errors.append(f"binary op {op} without DAVE")
            return
        try:
            replies = self.dave.on_binary(session.dave, op, payload)
        except Exception as exc:  # davey raises plain exceptions
            log.exception("fake voice: DAVE op %d failed", op)
            self.errors.append(f"DAVE op {op}: {exc}")
            return
        await self._send_replies(connection, replies)

    async def _on_message(self, connection: _Connection, msg: dict[str, Any]) -> None:
        op, d = msg.get("op"), msg.get("d") or {}
        self.ops.append(VoiceOp(time.monotonic(), int(op or 0), d))
        session = connection.session
        if op == IDENTIFY and self.dave_protocol_version and not d.get("max_dave_protocol_version"):
            log.info("fake voice: IDENTIFY without DAVE in an E2EE call: closing 4017")
            await connection.ws.close(code=DAVE_REQUIRED)
        elif op == IDENTIFY:
            session = VoiceSession(ssrc=self._next_ssrc, secret_key=os.urandom(32), identify=d)
            self._next_ssrc += 1
            self.sessions.append(session)
            connection.session = session
            ready = {"ssrc": session.ssrc, "ip": "127.0.0.1", "port": self.udp_port}
            await self._send(connection, READY, ready | {"modes": self.modes})
        elif op == RESUME:
            await self._resume(connection, d)
        elif op == HEARTBEAT:
            nonce = d.get("t") if isinstance(d, dict) else d
            await self._send(connection, HEARTBEAT_ACK, {"t": nonce} if isinstance(d, dict) else d)
        elif session is None:
            log.warning("fake voice: op %s before IDENTIFY or RESUME: closing 4003", op)
            await connection.ws.close(code=NOT_AUTHENTICATED)
        elif op == SELECT_PROTOCOL:
            await self._select_protocol(connection, session, d)
        elif op == SPEAKING:
            session.speaking.append(int(d.get("speaking", 0)))
        elif op in (e2ee.TRANSITION_READY, e2ee.INVALID_COMMIT_WELCOME) and session.dave:
            try:
                replies = self.dave.on_json(session.dave, int(op), d)
            except ValueError as exc:
                self.errors.append(f"DAVE op {op}: {exc}")
                return
            await self._send_replies(connection, replies)
        else:
            log.warning("fake voice: unhandled op %s: %r", op, d)

    async def _select_protocol(
        self, connection: _Connection, session: VoiceSession, d: dict[str, Any]
    ) -> None:
        """SESSION_DESCRIPTION, offering DAVE if both sides speak it; then DAVE's op 25."""
        session.mode = d["data"]["mode"]
        identify = session.identify or {}
        version = min(self.dave_protocol_version, int(identify.get("max_dave_protocol_version", 0)))
        description = {
            "mode": session.mode,
            "secret_key": list(session.secret_key),
            "dave_protocol_version": version,
            "audio_codec": "opus",
            "media_session_id": f"media-{session.ssrc}",
        }
        await self._send(connection, SESSION_DESCRIPTION, description)
        if version:
            channel_id = self.channels.get(str(identify.get("token")))
            if channel_id is None:
                raise ValueError("DAVE needs the voice channel: grant() the token first")
            session.dave = DaveState(int(identify["user_id"]), channel_id, version)
            await self._send_replies(connection, self.dave.start(session.dave))

    async def _resume(self, connection: _Connection, d: dict[str, Any]) -> None:
        """RESUME: pick the session up on this websocket (RESUMED), or refuse it (4006)."""
        found = next(
            (s for s in reversed(self.sessions) if s.matches(d) and s.resumable and s.closed),
            None,
        )
        if found is None:
            log.info("fake voice: RESUME of an unknown or ended session: closing 4006")
            await connection.ws.close(code=SESSION_NO_LONGER_VALID)
            return
        found.closed = False
        found.resumes.append(d)
        connection.session = found
        await self._send(connection, RESUMED, None)

    # -- test API ------------------------------------------------------------------------------
    def grant(self, token: str, channel_id: str | int) -> None:
        """Tell the server the voice channel a VOICE_SERVER_UPDATE token is for."""
        self.channels[token] = int(channel_id)

    async def downgrade(self) -> int:
        """A member without DAVE joined: every open DAVE session is told to transition to
        protocol version 0 (op 21); returns how many were."""
        return await self._to_dave_sessions(self.dave.downgrade)

    async def upgrade(self) -> int:
        """Every member speaks DAVE again: prepare epoch 1 (op 24) on every open DAVE session;
        returns how many were told."""
        return await self._to_dave_sessions(self.dave.upgrade)

    async def member_joins(self, user_id: int) -> int:
        """A member with DAVE joins the call of every open DAVE session: the server proposes
        adding it (op 27) and the client commits; returns how many sessions were told."""
        return await self._to_dave_sessions(lambda state: self.dave.member_joins(state, user_id))

    async def member_leaves(self, user_id: int) -> int:
        """A member (one :meth:`member_joins` added) leaves: the server proposes its removal
        (op 27); returns how many sessions were told."""
        return await self._to_dave_sessions(lambda state: self.dave.member_leaves(state, user_id))

    async def _to_dave_sessions(self, make: Callable[[DaveState], list[e2ee.Reply]]) -> int:
        told = 0
        for connection in list(self._connections):
            session = connection.session
            if session is not None and session.dave is not None and not connection.ws.closed:
                await self._send_replies(connection, make(session.dave))
                told += 1
        return told

    async def drop_connections(
        self, code: int = SERVER_CRASHED, *, resumable: bool | None = None
    ) -> int:
        """Close every open voice websocket with ``code``; returns how many were closed.

        4015 (the voice server crashed) leaves the sessions resumable (RESUME, op 7); other
        codes, e.g. 4006 (session no longer valid), end them, so the client must connect anew
        through the gateway. ``resumable`` overrides that.
        """
        keep = code == SERVER_CRASHED if resumable is None else resumable
        dropped = 0
        for connection in list(self._connections):
            if connection.session is not None:
                connection.session.resumable = keep
            if not connection.ws.closed:
                await connection.ws.close(code=code)
                dropped += 1
        return dropped

    # -- UDP -----------------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) == 74 and data[:2] == b"\x00\x01":
            self.discoveries.append(addr)
            (ssrc,) = struct.unpack_from(">I", data, 4)
            answer = bytearray(74)
            struct.pack_into(">HHI", answer, 0, 2, 70, ssrc)
            ip = addr[0].encode("ascii")
            answer[8 : 8 + len(ip)] = ip
            struct.pack_into(">H", answer, 72, addr[1])
            for session in self.sessions:
                if session.ssrc == ssrc:
                    session.client_address = addr
            assert self._udp is not None
            self._udp.sendto(bytes(answer), addr)
            return
        if len(data) < 12 + 16 + 4 or data[0] != 0x80 or (data[1] & 0x7F) != 0x78:
            self.errors.append(f"unexpected datagram of {len(data)} bytes from {addr}")
            return
        seq, timestamp, ssrc = struct.unpack_from(">HII", data, 2)
        found = next((s for s in reversed(self.sessions) if s.ssrc == ssrc), None)
        if found is None:
            self.errors.append(f"RTP for unknown ssrc {ssrc}")
            return
        session = found
        header, ciphertext, suffix = data[:12], data[12:-4], data[-4:]
        try:
            opus = nacl.secret.Aead(session.secret_key).decrypt(
                ciphertext, header, suffix + b"\0" * 20
            )
        except nacl.exceptions.CryptoError as exc:
            self.errors.append(f"RTP seq {seq} failed to decrypt: {exc}")
            return
        end_to_end = False
        if session.dave is not None:
            try:
                opus, end_to_end = self.dave.open_frame(session.dave, opus)
            except ValueError as exc:
                self.errors.append(f"RTP seq {seq}: {exc}")
                return
        self.packets.append(RtpPacket(time.monotonic(), seq, timestamp, ssrc, opus, end_to_end))

    # -- queries -------------------------------------------------------------------------------
    def received_opus(self, *, include_silence: bool = False) -> list[bytes]:
        """The decrypted Opus frames, in arrival order (silence frames left out by default)."""
        return [p.opus for p in self.packets if include_silence or not p.is_silence]

    def voice_frames(self) -> list[RtpPacket]:
        return [p for p in self.packets if not p.is_silence]

    def ops_named(self, op: int) -> list[Any]:
        return [o.d for o in self.ops if o.op == op]


def count_silence(frames: Iterable[bytes]) -> int:
    return sum(1 for frame in frames if frame == OPUS_SILENCE)


def decode_opus(
    frames: Iterable[bytes], *, rate: int = 48_000, layout: str = "stereo"
) -> np.ndarray:
    """Decode Opus frames (48 kHz stereo, as Discord carries them) with PyAV's bundled libopus.

    Returns float32 samples shaped ``(samples, channels)``, resampled to ``rate``/``layout``.
    """
    import av  # optional: only the listening tests need it

    codec = av.CodecContext.create("libopus", "r")
    codec.sample_rate = 48_000
    codec.layout = "stereo"
    resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
    chunks: list[np.ndarray] = []

    def collect(frame: Any) -> None:
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))

    for data in frames:
        for frame in codec.decode(av.Packet(data)):
            collect(frame)
    collect(None)
    channels = 1 if layout == "mono" else 2
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return samples.astype(np.float32).reshape(-1, channels)
