"""Home Assistant's websocket API, kept connected: :class:`HomeAssistantClient`.

One connection carries subscriptions, ``call_service``, ``fire_event``, ``get_states`` and
``ping``; a reader task routes each message to the future of its id or its subscription's
handler, and ids are allocated and sent under one lock (Home Assistant refuses reused ids).
A dropped connection fails commands in flight with :class:`ConnectionLost`, then reconnects
forever (capped, jittered backoff), authenticates and resubscribes; events of the gap are lost
and logged. Protocol: https://developers.home-assistant.io/docs/api/websocket. Our own client:
``homeassistant-api`` has no reader task, keepalive or reconnect. Over 450 lines for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
from pydantic import SecretStr

from bot.errors import OyezError
from bot.ops.metrics import HOMEASSISTANT_RECONNECTS
from bot.providers.ratelimit import jittered_backoff_s

__all__ = [
    "AuthenticationFailed",
    "CommandFailed",
    "ConnectionLost",
    "EventHandler",
    "HomeAssistantClient",
    "HomeAssistantError",
    "HomeAssistantEvent",
    "StreamHandler",
]

log = logging.getLogger(__name__)

#: Largest message accepted, bytes (``get_states`` of a big installation runs to megabytes).
MAX_MESSAGE = 64 * 1024 * 1024
#: Home Assistant's core states while it is starting (``CoreState``, ``homeassistant/core.py``).
STARTING = frozenset({"NOT_RUNNING", "STARTING"})
#: The event Home Assistant fires when its core state or configuration changes.
CORE_CONFIG_UPDATED = "core_config_updated"
#: Seconds between looks at the core state of a Home Assistant that is starting.
STARTED_POLL_S = 1.0


class HomeAssistantError(OyezError):
    """Talking to Home Assistant failed."""


class AuthenticationFailed(HomeAssistantError):
    """Home Assistant refused the access token (``auth_invalid``)."""


class ConnectionLost(HomeAssistantError):
    """Not connected, or the connection dropped before the answer came."""


class CommandFailed(HomeAssistantError):
    """Home Assistant answered a command with an error: ``code`` and ``message`` are its own
    (e.g. ``service_validation_error``, ``unauthorized``, ``not_found``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{message} ({code})")


@dataclass(frozen=True, slots=True)
class HomeAssistantEvent:
    """One event from a subscription. ``time_fired`` is aware (UTC); ``user_id`` is the Home
    Assistant user whose action fired it, when there was one."""

    event_type: str
    data: Any
    time_fired: datetime | None = None
    origin: str | None = None
    context_id: str | None = None
    user_id: str | None = None

    @classmethod
    def from_payload(cls, raw: dict[str, Any]) -> HomeAssistantEvent:
        """From the ``event`` of an ``{"type": "event"}`` message."""
        fired = raw.get("time_fired")
        try:
            time_fired = datetime.fromisoformat(fired) if isinstance(fired, str) else None
        except ValueError:
            time_fired = None
        if time_fired is not None and time_fired.tzinfo is None:
            time_fired = None
        context = raw.get("context") if isinstance(raw.get("context"), dict) else {}
        assert isinstance(context, dict)
        return cls(
            event_type=str(raw.get("event_type", "")),
            data=raw.get("data"),
            time_fired=time_fired,
            origin=raw.get("origin"),
            context_id=context.get("id"),
            user_id=context.get("user_id"),
        )


EventHandler = Callable[[HomeAssistantEvent], Awaitable[None]]
#: Called with (the subscription's id, its event's ``event`` payload), in the reader task.
StreamHandler = Callable[[int, dict[str, Any]], None]


@dataclass(slots=True)
class _Connection:
    """One websocket with its reader and keepalive tasks and its subscriptions' handlers."""

    ws: aiohttp.ClientWebSocketResponse
    handlers: dict[int, EventHandler] = field(default_factory=dict)
    streams: dict[int, StreamHandler] = field(default_factory=dict)
    reader: asyncio.Task[str] | None = None
    pinger: asyncio.Task[str] | None = None


class HomeAssistantClient:
    """A websocket client that stays connected.

    ``url`` is the websocket URL (``ws://host:8123/api/websocket``). Pass ``session`` to share
    an aiohttp session; the client closes only a session it created. Use as an async context
    manager, or :meth:`connect` then :meth:`close`.
    """

    def __init__(  # noqa: PLR0913 - keyword-only tunables
        self,
        url: str,
        token: SecretStr,
        *,
        session: aiohttp.ClientSession | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        ping_interval_s: float = 30.0,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self._token = token
        self._session = session
        self._owns_session = session is None
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.ping_interval_s = ping_interval_s
        self.request_timeout_s = request_timeout_s
        #: Home Assistant's version, from ``auth_ok``.
        self.ha_version: str | None = None
        #: How many times the connection was re-established.
        self.reconnects = 0
        self._connection: _Connection | None = None
        self._connected = asyncio.Event()
        self._next_id = 0
        self._send_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscriptions: list[tuple[str, EventHandler]] = []
        self._streams: list[tuple[dict[str, Any], StreamHandler]] = []
        self._events: asyncio.Queue[tuple[EventHandler, HomeAssistantEvent]] = asyncio.Queue()
        self._supervisor: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._lost_at: float | None = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def down_for_s(self) -> float | None:
        """Seconds since the connection was lost; None while connected."""
        if self._lost_at is None or self.connected:
            return None
        return asyncio.get_running_loop().time() - self._lost_at

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Return once connected; raises ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    # -- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and authenticate, then keep the connection up until :meth:`close`.

        Raises :class:`AuthenticationFailed` when the token is refused and
        :class:`HomeAssistantError` when Home Assistant cannot be reached: a first connection
        that fails is an error, not a retry loop (a later drop is retried forever).
        """
        if self._supervisor is not None:
            raise RuntimeError("already connected")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._close_session()
            raise
        self._dispatcher = asyncio.create_task(self._dispatch(), name="oyez-ha-events")
        self._supervisor = asyncio.create_task(self._supervise(), name="oyez-ha-connection")

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` (raises what broke the connection keeper, if anything)."""
        supervisor = self._supervisor
        if supervisor is None:
            raise RuntimeError("not connected")
        await asyncio.wait({supervisor})  # being cancelled here does not cancel it
        error = None if supervisor.cancelled() else supervisor.exception()
        if error is not None:
            raise error

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any] | None] = [self._supervisor, self._dispatcher]
        if self._connection is not None:
            tasks += [self._connection.reader, self._connection.pinger]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._supervisor = self._dispatcher = None
        self._connected.clear()
        await self._drop_connection(ConnectionLost("the client was closed"))
        await self._close_session()

    async def _close_session(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- commands ------------------------------------------------------------------------------

    async def command(self, message: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        """Send ``message`` (without ``id``) and return its ``result``.

        Waits for the connection while it is being re-established. Raises
        :class:`CommandFailed` with Home Assistant's error code and message,
        :class:`ConnectionLost` when not connected (or the connection drops) within the
        timeout (``request_timeout_s`` by default), :class:`HomeAssistantError` when no
        answer comes in time.
        """
        timeout_s = timeout_s if timeout_s is not None else self.request_timeout_s
        kind = str(message.get("type"))
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
                connection = self._connection
                assert connection is not None
                return await self._command_on(connection, message)
        except TimeoutError:
            if not self.connected:
                raise ConnectionLost(
                    f"not connected to Home Assistant (reconnecting) for {kind}"
                ) from None
            raise HomeAssistantError(
                f"Home Assistant did not answer {kind} within {timeout_s:g} s"
            ) from None

    async def call_service(
        self,
        domain: str,
        service: str,
        service_data: dict[str, Any] | None = None,
        *,
        target: dict[str, Any] | None = None,
        return_response: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """``call_service``; returns its result (``{"context": …, "response": …}``). Raises
        what :meth:`command` raises; ``timeout_s`` (default ``request_timeout_s``) is longer for
        a service that answers once what it started is over (an announcement played)."""
        message: dict[str, Any] = {"type": "call_service", "domain": domain, "service": service}
        if service_data:
            message["service_data"] = service_data
        if target:
            message["target"] = target
        if return_response:
            message["return_response"] = True
        return await self.command(message, timeout_s=timeout_s)

    async def fire_event(self, event_type: str, event_data: dict[str, Any] | None = None) -> None:
        """``fire_event`` (needs an administrator's token)."""
        message: dict[str, Any] = {"type": "fire_event", "event_type": event_type}
        if event_data is not None:
            message["event_data"] = event_data
        await self.command(message)

    async def get_states(self) -> list[dict[str, Any]]:
        """Every entity's state: ``[{"entity_id", "state", "attributes", …}, …]``."""
        states = await self.command({"type": "get_states"})
        return list(states or [])

    async def ping(self) -> None:
        """One ``ping``/``pong`` round trip."""
        await self.command({"type": "ping"})

    async def core_state(self) -> str | None:
        """Home Assistant's core state, ``get_config``'s ``state``: ``NOT_RUNNING`` (loading
        its integrations), ``STARTING``, ``RUNNING``, ``STOPPING``… (``CoreState`` in
        ``homeassistant/core.py``, 2025.4); None when it does not say. Raises what
        :meth:`command` raises."""
        config = await self.command({"type": "get_config"})
        state = config.get("state") if isinstance(config, dict) else None
        return state if isinstance(state, str) else None

    async def wait_started(self, timeout_s: float) -> bool:
        """Wait, up to ``timeout_s`` seconds, while Home Assistant is starting (its core state
        ``NOT_RUNNING`` or ``STARTING``): its websocket answers early in its start-up, before
        its integrations have made their entities. Returns whether it was starting (so what
        was missing is worth looking for again); False at once for one that is running, or
        that does not answer ``get_config``. Raises :class:`ConnectionLost` and
        :class:`HomeAssistantError` as :meth:`command`.

        Home Assistant fires ``core_config_updated`` (which any user may subscribe to) right
        after it becomes ``RUNNING`` (``HomeAssistant.async_start``, ``homeassistant/core.py``);
        the state is read again then, and every second in case that event is missed.
        """
        try:
            if await self.core_state() not in STARTING:
                return False
        except CommandFailed:
            return False
        changed = asyncio.Event()

        async def on_config(_event: HomeAssistantEvent) -> None:
            changed.set()

        await self.subscribe_events(CORE_CONFIG_UPDATED, on_config)
        try:
            async with asyncio.timeout(timeout_s):
                while await self.core_state() in STARTING:
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(STARTED_POLL_S):
                            await changed.wait()
        except TimeoutError:
            log.warning("home assistant: still starting after %.0f s", timeout_s)
        finally:
            await self.unsubscribe_events(CORE_CONFIG_UPDATED, on_config)
        return True

    async def subscribe_events(self, event_type: str, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every ``event_type`` event, on this connection and on
        every later one. Handlers run one at a time, in order, off the reader task; one that
        raises is logged and the next event still comes. Raises :class:`CommandFailed` when
        Home Assistant refuses (``unauthorized``: custom events need an administrator)."""
        self._subscriptions.append((event_type, handler))
        connection = self._connection
        if self.connected and connection is not None:
            try:
                await self._subscribe(connection, event_type, handler)
            except ConnectionLost:
                pass  # made again on the next connection
            except BaseException:
                self._subscriptions.remove((event_type, handler))
                raise

    async def unsubscribe_events(self, event_type: str, handler: EventHandler) -> None:
        """Stop calling ``handler`` for ``event_type`` events (made by
        :meth:`subscribe_events`), on this connection (``unsubscribe_events``) and later ones.
        A connection that drops meanwhile is no error: the next one does not subscribe it."""
        if (event_type, handler) not in self._subscriptions:
            return
        self._subscriptions.remove((event_type, handler))
        connection = self._connection
        if connection is None:
            return
        ids = [i for i, each in connection.handlers.items() if each == handler]
        for message_id in ids:
            connection.handlers.pop(message_id, None)  # no event of it is dispatched any more
        if not self.connected:
            return
        for message_id in ids:
            message = {"type": "unsubscribe_events", "subscription": message_id}
            with contextlib.suppress(HomeAssistantError, TimeoutError):
                async with asyncio.timeout(self.request_timeout_s):
                    await self._command_on(connection, message)

    async def subscribe_stream(self, message: dict[str, Any], handler: StreamHandler) -> None:
        """Send the subscription command ``message`` (without ``id``; e.g. ``subscribe_entities``)
        on this connection and on every later one, and call ``handler(subscription_id,
        event)`` with the ``event`` of each of its messages, in the reader task, in the order
        they came: it must be quick and must not block. A new subscription id means a new
        connection (what came before it may be stale). Raises :class:`CommandFailed` when Home
        Assistant refuses it now; a refusal on a later connection is logged, and that
        connection goes on without it."""
        self._streams.append((message, handler))
        connection = self._connection
        if self.connected and connection is not None:
            try:
                await self._subscribe_stream(connection, message, handler)
            except ConnectionLost:
                pass  # made again on the next connection
            except BaseException:
                self._streams.remove((message, handler))
                raise

    def stream_id(self, handler: StreamHandler) -> int | None:
        """The id of ``handler``'s subscription on the current connection; None while not
        connected, or before Home Assistant accepted it."""
        connection = self._connection
        if connection is None or not self.connected:
            return None
        return next((i for i, h in connection.streams.items() if h == handler), None)

    # -- inside --------------------------------------------------------------------------------

    async def _command_on(
        self,
        connection: _Connection,
        message: dict[str, Any],
        handler: EventHandler | None = None,
        stream: StreamHandler | None = None,
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with self._send_lock:  # ids must reach Home Assistant in increasing order
            self._next_id += 1
            message_id = self._next_id
            self._pending[message_id] = future
            if handler is not None:
                connection.handlers[message_id] = handler
            if stream is not None:
                connection.streams[message_id] = stream
            try:
                await connection.ws.send_str(json.dumps({"id": message_id, **message}))
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                self._pending.pop(message_id, None)
                connection.handlers.pop(message_id, None)
                connection.streams.pop(message_id, None)
                raise ConnectionLost(f"the connection to Home Assistant dropped: {exc}") from None
        try:
            return await future
        except HomeAssistantError:
            connection.handlers.pop(message_id, None)
            connection.streams.pop(message_id, None)
            raise
        finally:
            self._pending.pop(message_id, None)

    async def _subscribe(
        self, connection: _Connection, event_type: str, handler: EventHandler
    ) -> None:
        message = {"type": "subscribe_events", "event_type": event_type}
        async with asyncio.timeout(self.request_timeout_s):
            await self._command_on(connection, message, handler)

    async def _subscribe_stream(
        self, connection: _Connection, message: dict[str, Any], handler: StreamHandler
    ) -> None:
        async with asyncio.timeout(self.request_timeout_s):
            await self._command_on(connection, message, stream=handler)

    async def _resubscribe_streams(self, connection: _Connection) -> None:
        """The stream subscriptions on a new connection; a refusal is logged, not fatal."""
        index = 0
        while index < len(self._streams):
            message, handler = self._streams[index]
            index += 1
            try:
                await self._subscribe_stream(connection, message, handler)
            except CommandFailed as exc:
                log.warning("home assistant: %s refused: %s", message.get("type"), exc)

    async def _open(self) -> None:
        """Connect, authenticate, start the reader and keepalive, resubscribe."""
        assert self._session is not None
        where = f"Home Assistant at {self.url}"
        try:
            async with asyncio.timeout(self.request_timeout_s):
                ws = await self._session.ws_connect(
                    self.url, autoping=True, max_msg_size=MAX_MESSAGE
                )
        except TimeoutError:
            raise HomeAssistantError(
                f"cannot connect to {where}: no answer within {self.request_timeout_s:g} s"
            ) from None
        except aiohttp.WSServerHandshakeError as exc:
            raise HomeAssistantError(
                f"cannot connect to {where}: HTTP {exc.status} (is the URL Home Assistant's?)"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HomeAssistantError(f"cannot connect to {where}: {exc}") from None
        try:
            await self._authenticate(ws, where)
            connection = _Connection(ws)
            connection.reader = asyncio.create_task(self._read(connection), name="oyez-ha-reader")
            self._connection = connection
            index = 0  # by index: a subscription added meanwhile is made here too
            while index < len(self._subscriptions):
                await self._subscribe(connection, *self._subscriptions[index])
                index += 1
            await self._resubscribe_streams(connection)
            connection.pinger = asyncio.create_task(
                self._keepalive(connection), name="oyez-ha-keepalive"
            )
        except BaseException as exc:
            failure = exc
            if isinstance(exc, TimeoutError):
                failure = HomeAssistantError(f"{where} did not answer while subscribing")
            await self._drop_connection(ConnectionLost(f"connecting to {where} failed"))
            if failure is not exc:
                raise failure from None
            raise
        self._connected.set()

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse, where: str) -> None:
        try:
            async with asyncio.timeout(self.request_timeout_s):
                hello = await self._receive(ws)
                if hello.get("type") != "auth_required":
                    raise HomeAssistantError(f"{where} did not ask to authenticate")
                await ws.send_str(
                    json.dumps({"type": "auth", "access_token": self._token.get_secret_value()})
                )
                reply = await self._receive(ws)
        except BaseException:
            await ws.close()
            raise
        if reply.get("type") == "auth_ok":
            self.ha_version = reply.get("ha_version")
            return
        await ws.close()
        if reply.get("type") == "auth_invalid":
            raise AuthenticationFailed(
                f"{where} refused the access token ({reply.get('message', 'auth_invalid')}): "
                "check homeassistant.token (a long-lived access token of an administrator)"
            )
        raise HomeAssistantError(f"{where} answered authentication with {reply.get('type')!r}")

    @staticmethod
    async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        message = await ws.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise HomeAssistantError(f"the connection closed ({message.type.name})")
        data = json.loads(message.data)
        if not isinstance(data, dict):
            raise HomeAssistantError("Home Assistant sent an unexpected message")
        return data

    async def _read(self, connection: _Connection) -> str:
        """Route messages until the connection ends; returns why it ended."""
        ws = connection.ws
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                try:
                    data = json.loads(message.data)
                except ValueError:
                    log.warning("home assistant: a message that is not JSON was ignored")
                    continue
                for item in data if isinstance(data, list) else [data]:
                    if isinstance(item, dict):
                        self._route(connection, item)
            elif message.type is aiohttp.WSMsgType.ERROR:
                return f"websocket error: {ws.exception()}"
        return f"Home Assistant closed the connection (code {ws.close_code})"

    def _route(self, connection: _Connection, item: dict[str, Any]) -> None:
        message_id = item.get("id")
        kind = item.get("type")
        if kind == "event":
            if not isinstance(message_id, int):
                return
            event = item.get("event")
            handler = connection.handlers.get(message_id)
            if handler is not None and isinstance(event, dict):
                self._events.put_nowait((handler, HomeAssistantEvent.from_payload(event)))
            stream = connection.streams.get(message_id)
            if stream is not None and isinstance(event, dict):
                try:
                    stream(message_id, event)
                except Exception:
                    log.exception(
                        "home assistant: the handler of subscription %d failed", message_id
                    )
            return
        future = self._pending.pop(message_id, None) if isinstance(message_id, int) else None
        if future is None or future.done():
            return
        if kind == "result":
            if item.get("success"):
                future.set_result(item.get("result"))
            else:
                error = item.get("error") if isinstance(item.get("error"), dict) else {}
                assert isinstance(error, dict)
                future.set_exception(
                    CommandFailed(
                        str(error.get("code", "unknown_error")),
                        str(error.get("message", "no message")),
                    )
                )
        else:  # pong, and anything else answering an id
            future.set_result(item)

    async def _keepalive(self, connection: _Connection) -> str:
        """Ping every ``ping_interval_s``; returns (ending the connection) when a pong is late."""
        while True:
            await asyncio.sleep(self.ping_interval_s)
            try:
                async with asyncio.timeout(min(self.ping_interval_s, self.request_timeout_s)):
                    await self._command_on(connection, {"type": "ping"})
            except TimeoutError:
                return f"no pong within {min(self.ping_interval_s, self.request_timeout_s):g} s"
            except HomeAssistantError as exc:
                return str(exc)

    async def _dispatch(self) -> None:
        while True:
            handler, event = await self._events.get()
            try:
                await handler(event)
            except Exception:
                log.exception("home assistant: the handler of a %s event failed", event.event_type)

    async def _drop_connection(self, error: HomeAssistantError) -> None:
        """Close the current websocket and fail every command waiting on it."""
        connection, self._connection = self._connection, None
        self._connected.clear()
        if connection is not None:
            for task in (connection.reader, connection.pinger):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await connection.ws.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def _supervise(self) -> None:
        """Wait for the connection to end, then reconnect until it is back; forever."""
        loop = asyncio.get_running_loop()
        while True:
            connection = self._connection
            assert connection is not None
            assert connection.reader is not None
            assert connection.pinger is not None
            done, _ = await asyncio.wait(
                {connection.reader, connection.pinger}, return_when=asyncio.FIRST_COMPLETED
            )
            ended = next(iter(done))
            if ended.cancelled():
                reason = "its task was cancelled"
            elif ended.exception() is not None:
                reason = f"the connection failed: {ended.exception()!r}"
            else:
                reason = ended.result()
            self._lost_at = loop.time()
            self._connected.clear()
            await self._drop_connection(ConnectionLost(f"the connection dropped ({reason})"))
            log.warning("home assistant: connection lost (%s); reconnecting", reason)
            attempt = 0
            while True:
                delay = jittered_backoff_s(
                    attempt, self.reconnect_min_s, self.reconnect_max_s, jitter=0.5
                )
                await asyncio.sleep(delay)
                attempt += 1
                try:
                    await self._open()
                except AuthenticationFailed as exc:
                    log.error("home assistant: reconnection %d: %s", attempt, exc)
                except HomeAssistantError as exc:
                    log.warning("home assistant: reconnection %d failed: %s", attempt, exc)
                else:
                    break
            self.reconnects += 1
            HOMEASSISTANT_RECONNECTS.inc()
            gap = loop.time() - self._lost_at
            log.warning(
                "home assistant: reconnected after %.1f s; events in that gap are lost", gap
            )
