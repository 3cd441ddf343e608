"""A small scripted Home Assistant websocket server on 127.0.0.1, for the failure paths the
real one cannot be made to show on demand (silent pongs, drops, a start-up that lasts).

It follows Home Assistant 2025.4's websocket API (homeassistant/components/websocket_api/
commands.py): ``auth_required``/``auth``/``auth_ok``; results as ``{"id", "type": "result",
"success", "result" | "error": {"code", "message"}}``; ``get_config`` with the core ``state``;
``call_service`` answered with its ``context``, an unknown target ignored as Home Assistant
does (it logs the missing entity and succeeds).
"""

from __future__ import annotations

import json
from typing import Any, Self

from aiohttp import WSMsgType, web
from pydantic import SecretStr

from integrations.homeassistant.websocket import HomeAssistantClient

TOKEN = "scripted-token-abcdef"


class ScriptedHomeAssistant:
    """Speaks enough of the websocket API: auth, subscribe_events, unsubscribe_events, ping,
    get_states (``states``), get_config (``core_state``: :meth:`set_core_state` changes it and
    fires ``core_config_updated``, as Home Assistant does) and call_service (each recorded in
    ``calls`` as ``(domain, service, service_data, target)``); ``hang`` is never answered.
    Refuses (``id_reuse``) an id that does not increase."""

    def __init__(self) -> None:
        self.answer_pings = True
        self.core_state = "RUNNING"
        self.states: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        #: How many ``get_config`` were answered.
        self.config_reads = 0
        self.connections: list[web.WebSocketResponse] = []
        self.subscriptions: dict[web.WebSocketResponse, dict[str, int]] = {}
        self.id_errors = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/api/websocket", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/websocket"

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "auth_required", "ha_version": "scripted"})
        auth = await ws.receive_json()
        if auth.get("access_token") != TOKEN:
            await ws.send_json({"type": "auth_invalid", "message": "Invalid access token"})
            await ws.close()
            return ws
        await ws.send_json({"type": "auth_ok", "ha_version": "scripted"})
        self.connections.append(ws)
        self.subscriptions[ws] = {}
        last_id = 0
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["id"] <= last_id:
                self.id_errors += 1
                await ws.send_json(
                    {
                        "id": data["id"],
                        "type": "result",
                        "success": False,
                        "error": {
                            "code": "id_reuse",
                            "message": "Identifier values have to increase.",
                        },
                    }
                )
                continue
            last_id = data["id"]
            answer = await self._answer(ws, data)
            if answer is not None:
                await ws.send_json({"id": data["id"], **answer})
        return ws

    async def _answer(
        self, ws: web.WebSocketResponse, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The answer to the command ``data`` (without its id; None: no answer)."""
        kind = data["type"]
        if kind == "ping":
            return {"type": "pong"} if self.answer_pings else None
        if kind == "hang":
            return None
        if kind == "subscribe_events":
            self.subscriptions[ws][data["event_type"]] = data["id"]
            return _result(None)
        if kind == "unsubscribe_events":  # as Home Assistant: by the subscribing id
            subscribed = self.subscriptions[ws]
            found = [t for t, i in subscribed.items() if i == data["subscription"]]
            for event_type in found:
                del subscribed[event_type]
            return {"type": "result", "success": bool(found), "result": None}
        if kind == "get_states":
            return _result(self.states)
        if kind == "get_config":
            self.config_reads += 1
            return _result({"version": "scripted", "state": self.core_state})
        if kind == "call_service":
            target = data.get("target") or {}
            self.calls.append(
                (data["domain"], data["service"], data.get("service_data") or {}, target)
            )
            return _result({"context": {"id": f"c{data['id']}", "parent_id": None}})
        return {
            "type": "result",
            "success": False,
            "error": {"code": "unknown_command", "message": "Unknown command."},
        }

    async def push(self, event_type: str, data: dict[str, Any]) -> int:
        """Send an event to every live subscription; returns how many got it."""
        sent = 0
        for ws, subscribed in self.subscriptions.items():
            if event_type in subscribed and not ws.closed:
                await ws.send_json(
                    {
                        "id": subscribed[event_type],
                        "type": "event",
                        "event": {
                            "event_type": event_type,
                            "data": data,
                            "origin": "LOCAL",
                            "time_fired": "2025-04-01T12:00:00.000000+00:00",
                            "context": {"id": "c", "user_id": "u1"},
                        },
                    }
                )
                sent += 1
        return sent

    async def set_core_state(self, state: str) -> None:
        """Home Assistant's core state becomes ``state``; ``core_config_updated`` is fired."""
        self.core_state = state
        await self.push("core_config_updated", {})

    async def drop(self) -> None:
        for ws in self.connections:
            await ws.close()


def client_for(server: ScriptedHomeAssistant, **options: Any) -> HomeAssistantClient:
    options = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2, **options}
    return HomeAssistantClient(server.url, SecretStr(TOKEN), **options)


def _result(result: Any) -> dict[str, Any]:
    return {"type": "result", "success": True, "result": result}
