"""What every fake provider server shares: serving, request log, scripted responses, limits.

A fake is an ``aiohttp.web`` application served on 127.0.0.1 at an ephemeral port::

    async with FakeTogether() as fake:
        fake.script("POST", "/v1/audio/speech", ScriptedResponse(429, headers={"Retry-After": "2"}))
        ...  # talk to fake.base_url; the first call gets the 429, the next one real audio
        assert fake.billed_calls == 1

Scripted responses form one FIFO per (method, path); ``path`` is either the request's path
(``/v1/orpheus-3b-0.1``) or the route's pattern (``/v2/requests/{request_id}/status``), and
``method`` may be ``"*"``. They are consumed before normal handling (no auth, no billing) and can
wait before answering or drop the connection instead of answering. Note that aiohttp's client
retries an idempotent request (GET) once when the server drops it, consuming two entries.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.audio import Synthesizer, tone_synthesizer
from tests.support.clock import FakeClock

__all__ = [
    "BilledCall",
    "Clock",
    "FakeClock",
    "FakeServer",
    "LoggedRequest",
    "RateLimiter",
    "ScriptedResponse",
]

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REDACTED = "<redacted>"


@dataclass(frozen=True)
class ScriptedResponse:
    """One canned answer. ``body``: bytes, text, or anything JSON-serialisable."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    content_type: str | None = None

    def to_response(self) -> web.Response:
        if isinstance(self.body, bytes):
            data, kind = self.body, "application/octet-stream"
        elif isinstance(self.body, str):
            data, kind = self.body.encode(), "text/plain; charset=utf-8"
        elif self.body is None:
            data, kind = b"", "application/octet-stream"
        else:
            data, kind = json.dumps(self.body).encode(), "application/json"
        headers = CIMultiDict({"Content-Type": self.content_type or kind})
        headers.update(self.headers)
        return web.Response(status=self.status, body=data, headers=headers)


@dataclass(frozen=True)
class LoggedRequest:
    """A request as the fake saw it; secret headers are redacted."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    time: float


@dataclass(frozen=True)
class BilledCall:
    model: str
    text: str
    cost: float = 0.0


class RateLimiter:
    """Sliding window: at most ``limit`` accepted requests in any ``window`` seconds.

    ``limit=None`` means unlimited. Rejected requests do not count.
    """

    def __init__(self, limit: int | None, clock: Clock, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: deque[float] = deque()

    def _prune(self) -> None:
        now = self._clock()
        while self._hits and self._hits[0] <= now - self.window:
            self._hits.popleft()

    def acquire(self) -> bool:
        self._prune()
        if self.limit is not None and len(self._hits) >= self.limit:
            return False
        self._hits.append(self._clock())
        return True

    @property
    def remaining(self) -> int:
        self._prune()
        if self.limit is None:
            return 1_000_000
        return max(0, self.limit - len(self._hits))

    def reset_at(self) -> float:
        """When the oldest counted request leaves the window (epoch seconds)."""
        self._prune()
        return self._hits[0] + self.window if self._hits else self._clock()


class FakeServer:
    """Base class: subclasses add their routes in :meth:`add_routes`."""

    secret_headers: ClassVar[frozenset[str]] = frozenset({"authorization", "x-api-key"})

    def __init__(
        self, *, synthesizer: Synthesizer | None = None, clock: Clock | None = None
    ) -> None:
        self.synthesizer: Synthesizer = synthesizer or tone_synthesizer
        self.clock: Clock = clock or time.time
        self.requests: list[LoggedRequest] = []
        self.billed: list[BilledCall] = []
        self.base_url = ""
        self._scripts: dict[tuple[str, str], deque[ScriptedResponse]] = {}
        self._runner: web.AppRunner | None = None

    # -- serving -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def make_app(self) -> web.Application:
        @web.middleware
        async def log_and_script(request: web.Request, handler: Handler) -> web.StreamResponse:
            body = await request.read()
            self.requests.append(self._log_entry(request, body))
            scripted = self._next_scripted(request)
            if scripted is None:
                return await handler(request)
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            if scripted.drop:
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=599)
            return scripted.to_response()

        app = web.Application(middlewares=[log_and_script])
        self.add_routes(app)
        return app

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
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

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- scripted responses --------------------------------------------------------------------
    def script(self, method: str, path: str, *responses: ScriptedResponse) -> None:
        """Queue canned answers for the next requests to ``method path`` (FIFO)."""
        self._scripts.setdefault((method.upper(), path), deque()).extend(responses)

    def pending_scripts(self, method: str, path: str) -> int:
        return len(self._scripts.get((method.upper(), path), ()))

    def _next_scripted(self, request: web.Request) -> ScriptedResponse | None:
        resource = request.match_info.route.resource
        paths = [request.path] + ([resource.canonical] if resource is not None else [])
        for method in (request.method, "*"):
            for path in paths:
                queue = self._scripts.get((method, path))
                if queue:
                    return queue.popleft()
        return None

    # -- request log ---------------------------------------------------------------------------
    def _log_entry(self, request: web.Request, body: bytes) -> LoggedRequest:
        headers = {name.lower(): value for name, value in request.headers.items()}
        for name in self.secret_headers & headers.keys():
            scheme, _, token = headers[name].partition(" ")
            headers[name] = f"{scheme} {REDACTED}" if token else REDACTED
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return LoggedRequest(
            request.method, request.path, dict(request.query), headers, body, parsed, self.clock()
        )

    def requests_to(self, path: str, method: str | None = None) -> list[LoggedRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    @property
    def billed_calls(self) -> int:
        return len(self.billed)
