"""A discord.py voice client that resumes a dropped voice websocket, as Discord documents it
(https://discord.com/developers/docs/topics/voice-connections#resuming-voice-connection).

On close code 4015 it resumes (op 7 RESUME until op 9 RESUMED: the UDP flow, the SSRC and the
secret key carry on) where discord.py 2.7.1 waits for ever and then leaves; a refused or timed
out resume starts over (leave and join). Each UDP socket gets its own reader thread, so that a
reconnect does not miss its IP discovery answer. ``on_gone`` says when it is gone for good.

Under DAVE, Discord's end-to-end encryption (https://daveprotocol.com), discord.py 2.7.1 calls a
connection up as soon as SESSION_DESCRIPTION has given the transport key, and its audio player
starts (or, after a reconnect, resumes) sending then, before the MLS group is joined: those
frames go out without end-to-end encryption, which the other members of an E2EE call cannot
play. This client holds the connection back until the DAVE session is ready (up to
:data:`DAVE_READY_TIMEOUT_S`), on every connect and reconnect; a resumed session keeps its
group and is ready at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import ConnectionFlowState, SocketReader, VoiceConnectionState

__all__ = ["DAVE_READY_TIMEOUT_S", "RESUME_TIMEOUT_S", "ResumingVoiceClient"]

log = logging.getLogger(__name__)

#: Seconds a voice resume may take before the client starts over instead (a live voice server
#: answers in milliseconds).
RESUME_TIMEOUT_S = 5.0

#: Seconds a new voice session may take to join its DAVE (MLS) group before the connection is
#: called up anyway (a live voice server welcomes a member in milliseconds).
DAVE_READY_TIMEOUT_S = 5.0


# discord.py's UDP reader thread waits in select() with a 30 s timeout, still on the socket of
# the previous connection, and closing a socket does not wake a select() on it: until it times
# out nobody reads the new socket, the IP discovery answer is missed and the reconnect times out.
# Once awake, it reads whatever socket is current, so a thread woken late can swallow the new
# socket's answer before the listener for it is registered. Hence one reader per socket, which
# reads only that socket; the previous one ends when its select() does.
class _SocketReader(SocketReader):
    """discord.py's UDP reader thread, bound to one socket. Like discord.py's, it sleeps while
    no listener is registered (the IP discovery answer waits in the socket until one is)."""

    def __init__(self, state: VoiceConnectionState, udp: socket.socket) -> None:
        super().__init__(state)
        self.udp = udp

    def run(self) -> None:  # discord.py's run, without its start-paused dance
        try:
            self._do_run()
        except Exception:
            log.exception("voice socket reader failed")
        finally:
            self.stop()
            self._running.clear()
            self._callbacks.clear()

    def _do_run(self) -> None:
        while not self._end.is_set():
            if not self._running.is_set():
                self._running.wait()
                continue
            try:
                readable, _, _ = select.select([self.udp], [], [], 30)
            except (ValueError, OSError):  # closed: a reconnect has its own socket and reader
                return
            if not readable or not self._running.is_set():
                continue
            try:
                data = self.udp.recv(2048)
            except OSError:
                continue
            for callback in list(self._callbacks):
                try:
                    callback(data)
                except Exception:
                    log.exception("voice socket listener %r failed", callback)


class _ResumingConnectionState(VoiceConnectionState):
    """discord.py's voice connection state machine, with Discord's resume on close code 4015
    and a UDP reader per socket, so that a reconnect does not miss its IP discovery answer."""

    def __init__(self, voice_client: discord.VoiceClient) -> None:
        super().__init__(voice_client, hook=self._watch)
        self._resumed = asyncio.Event()

    def _create_socket(self) -> None:
        super()._create_socket()
        self._socket_reader.stop()  # its select() may still wait on the previous socket
        self._socket_reader = _SocketReader(self, self.socket)
        self._socket_reader.start()

    async def _handshake_websocket(self) -> None:
        # discord.py's handshake, then the DAVE handshake before `connected` lets audio out
        while not self.ip:
            await self.ws.poll_event()
        self.state = ConnectionFlowState.got_ip_discovery
        while self.ws.secret_key is None:
            await self.ws.poll_event()
        await self._wait_for_dave()
        self.state = ConnectionFlowState.connected

    async def _wait_for_dave(self) -> None:
        """Read the voice websocket until the DAVE session can encrypt, when DAVE is on."""
        try:
            async with asyncio.timeout(DAVE_READY_TIMEOUT_S):
                while self.dave_protocol_version and not self.can_encrypt:
                    await self.ws.poll_event()
        except TimeoutError:
            log.warning(
                "voice: no DAVE group after %g s: audio goes out without end-to-end encryption",
                DAVE_READY_TIMEOUT_S,
            )

    async def _watch(self, ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:  # noqa: ARG002 - discord.py's voice websocket hook signature
        if msg.get("op") == DiscordVoiceWebSocket.RESUMED:
            self._resumed.set()

    async def _connect(
        self,
        reconnect: bool,
        timeout: float,  # noqa: ASYNC109 (discord.py's signature)
        self_deaf: bool,
        self_mute: bool,
        resume: bool,
    ) -> None:
        # discord.py calls this with resume=True only from its poll loop, after a 4015. Its own
        # handling sends gateway op 4 for the channel it is already in and waits for both voice
        # updates, but a VOICE_STATE_UPDATE does not move its state machine while it is still
        # `connected`, so it waits for ever; past that, it would wait for a SESSION_DESCRIPTION
        # that a resumed session never sends. Starting over (op 4 leave and join, a new
        # session) is what discord.py already does for the other close codes (4006, 1006...).
        if resume:
            try:
                async with asyncio.timeout(min(timeout, RESUME_TIMEOUT_S)):
                    await self._resume()
            except (discord.ConnectionClosed, TimeoutError, OSError, aiohttp.ClientError) as exc:
                log.info("voice resume failed (%r): connecting anew", exc)
                await self.disconnect(cleanup=False)
            else:
                log.info("voice connection resumed")
                return
        await super()._connect(reconnect, timeout, self_deaf, self_mute, resume=False)

    async def _resume(self) -> None:
        """A new websocket, RESUME (op 7), until RESUMED (op 9). Raises ``ConnectionClosed``
        when the server refuses (close code 4006), ``OSError``/``aiohttp.ClientError`` when it
        cannot be reached."""
        previous = self.ws
        with contextlib.suppress(Exception):
            await previous.close()  # already closed by the server; this stops its heartbeats
        self._resumed.clear()
        self.ws = await self._connect_websocket(resume=True)  # carries previous.seq_ack
        while not self._resumed.is_set():
            await self.ws.poll_event()
        self.state = ConnectionFlowState.connected


class ResumingVoiceClient(discord.VoiceClient):
    """A ``VoiceClient`` that resumes after close code 4015 and reports when it is gone.

    ``on_gone(voice_client)`` is called once, when discord.py cleans the client up: it left,
    was disconnected by someone, or could not reconnect. Pass it with ``functools.partial`` as
    the ``cls`` of ``VoiceChannel.connect``.
    """

    def __init__(
        self,
        client: discord.Client,
        channel: discord.abc.Connectable,
        *,
        on_gone: Callable[[ResumingVoiceClient], None] | None = None,
    ) -> None:
        super().__init__(client, channel)
        self.on_gone = on_gone

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the connection to be up (discord.py reconnects
        a dropped one on its own); returns whether it is."""
        with contextlib.suppress(TimeoutError):
            await self._connection.wait_async(timeout_s)
        return self.is_connected()

    def create_connection_state(self) -> VoiceConnectionState:
        return _ResumingConnectionState(self)

    def cleanup(self) -> None:
        super().cleanup()
        on_gone, self.on_gone = self.on_gone, None  # discord.py may clean up twice
        if on_gone is not None:
            on_gone(self)
