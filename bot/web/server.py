"""Oyez's own HTTP server (aiohttp): media for speakers, and the API.

:class:`MediaStore` serves each announcement at ``<public_url>/media/<token>.<ext>`` (128 random
bits) until ``http.media_ttl_s`` (600 s) passes; aiohttp's ``FileResponse`` answers the Range
requests (206, 416) players send, and a GET of the whole file is answered from memory while the
file is among the last published (:data:`KEPT_IN_MEMORY_BYTES`). Such a file is in memory
only: it is written to disk when it leaves memory, or when a Range or HEAD request needs it, by
a worker thread, never on the event loop (a disk write there held up the speaker's own fetch
right after ``play_media``; a slow SD card would hold up Discord's voice packets too). A file
can also be published
while it is still being made (:class:`GrowingMedia`): a plain GET is answered at once, chunked
(no ``Content-Length``), each part sent as soon as it is made (``Range: bytes=0-``, which
players send for the whole file, is answered the same way: a server may ignore a Range, RFC
9110 §14.2); HEAD and other Range requests wait for the whole file.

The API under ``/api/v1`` needs ``Authorization: Bearer <http.api_token>`` and is off (404)
without one. Other parts add their routes with :meth:`OyezServer.add_routes` before
:meth:`OyezServer.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from aiohttp import web

from bot.announce.announcer import Announcer
from bot.ops.config import HttpSettings
from bot.ops.logs import mask_secrets
from bot.ops.store import BUSY_TIMEOUT_S, is_lock_timeout
from bot.speech import OutputProfile, RequestSource

__all__ = [
    "API_PREFIX",
    "GrowingMedia",
    "MediaStore",
    "OyezServer",
    "is_loopback_url",
    "json_error",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_TOKEN_BYTES = 16  # 128 bits
_CONTENT_TYPES = {p.extension.removeprefix("."): p.mime_type for p in OutputProfile}
#: Largest API request body, bytes.
MAX_BODY = 64 * 1024
#: Bytes of the media written last kept in memory too: a GET of a whole file (what a speaker
#: sends first) is answered from them, without the worker-thread hops of a file response.
KEPT_IN_MEMORY_BYTES = 16 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error answer: ``{"error": message, ...}``."""
    return web.json_response({"error": mask_secrets(message), **extra}, status=status)


class BadRequest(web.HTTPBadRequest):
    """A 400 whose ``text`` is the reason, answered as ``{"error": reason}``."""

    def __init__(self, reason: str) -> None:
        super().__init__(text=reason)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is ``{"error": "..."}``: aiohttp's own (404, 405, 413: plain text)
    too. Bad input is one INFO line; only our own bugs are logged with a traceback (a 500). A
    state file locked by another process past the busy timeout is a 503 with ``Retry-After``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if isinstance(exc, BadRequest) and exc.text else exc.reason
        log.info("http: %s %s answered %d: %s", request.method, request.path, exc.status, reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = json_error(exc.status, reason)
        response.headers.update(headers)
        return response
    except Exception as exc:
        if is_lock_timeout(exc):
            log.warning("http: %s %s answered 503: %s", request.method, request.path, exc)
            response = json_error(
                503, "Oyez's database is locked by another process (e.g. an oyez command): retry"
            )
            response.headers["Retry-After"] = str(max(1, round(BUSY_TIMEOUT_S)))
            return response
        log.exception("http: %s %s failed", request.method, request.path)
        return json_error(500, "internal error (logged)")


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is a loopback address or ``localhost``."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GrowingMedia:
    """A media file published while it is still being made: :meth:`append` its parts in
    order, then :meth:`finish` (it is stored as a file like any other) or :meth:`fail`.
    Create inside the event loop (:meth:`MediaStore.publish_growing`)."""

    def __init__(self, on_finish: Callable[[bytes], None]) -> None:
        self.data = bytearray()
        self.complete = False
        #: Why it stopped short (set by :meth:`fail`), else None.
        self.error: str | None = None
        self._on_finish = on_finish
        self._changed = asyncio.Event()

    def append(self, part: bytes) -> None:
        if self.complete:
            raise RuntimeError("the media is complete: nothing can be appended")
        self.data += part
        self._changed.set()

    def finish(self) -> None:
        """All of it is made: stored as a file, served with a ``Content-Length`` from now."""
        if not self.complete:
            self.complete = True
            self._on_finish(bytes(self.data))
            self._changed.set()

    def fail(self, reason: str) -> None:
        """No more is coming: what was made is all there is (a fetch under way ends)."""
        if not self.complete:
            self.error = reason
            self.finish()

    async def wait(self) -> None:
        """Returns once the media is complete."""
        while not self.complete:
            self._changed.clear()
            await self._changed.wait()

    async def parts(self) -> AsyncIterator[bytes]:
        """What is made, from the start, as it is made, until the media is complete."""
        sent = 0
        while True:
            if sent < len(self.data):
                part = bytes(self.data[sent:])
                sent += len(part)
                yield part
                continue
            if self.complete:
                return
            self._changed.clear()
            await self._changed.wait()


class MediaStore:
    """Audio files served to speakers at unguessable, expiring URLs.

    ``clock`` is monotonic seconds (tests move it). Files live in ``directory``; expired ones
    are removed by :meth:`sweep` (run every minute by the server) and refused (404) at once.
    Published inside an event loop, a file is kept in memory only and written by a worker
    thread once it leaves memory (:attr:`write_behind`); :meth:`settle` waits for the writes
    under way.
    """

    #: Whether a file is written only once it leaves memory (or a request needs the file),
    #: off the event loop. A store whose files other processes serve writes them at once.
    write_behind: ClassVar[bool] = True

    def __init__(
        self,
        directory: Path,
        base_url: str,
        ttl_s: float = 600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.clock = clock
        self._expiry: dict[str, float] = {}
        self._growing: dict[str, GrowingMedia] = {}
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        #: Names whose audio is in memory only, no file yet; those being written: the task
        #: writing each, and its audio (served from memory until the task ends).
        self._memory_only: set[str] = set()
        self._writes: dict[str, tuple[asyncio.Task[None], bytes]] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.*"):  # left by an earlier run: their URLs are gone
            stale.unlink(missing_ok=True)

    def publish(self, audio: bytes, extension: str, ttl_s: float | None = None) -> str:
        """Store ``audio`` and return its public URL (valid ``ttl_s``, default the store's)."""
        name = self._name(extension)
        self._expiry[name] = self.clock() + (ttl_s if ttl_s is not None else self.ttl_s)
        self._write(name, audio)
        return f"{self.base_url}/media/{name}"

    def publish_growing(
        self, extension: str, ttl_s: float | None = None
    ) -> tuple[str, GrowingMedia]:
        """A public URL (valid ``ttl_s``, default the store's) for audio still being made, and
        the :class:`GrowingMedia` to give it to. Raises ValueError for an unknown extension."""
        name = self._name(extension)

        def finished(audio: bytes) -> None:  # nothing made: nothing to serve (404)
            if self._growing.pop(name, None) is not None and name in self._expiry and audio:
                self._write(name, audio)

        media = GrowingMedia(finished)
        self._growing[name] = media
        self._expiry[name] = self.clock() + (ttl_s if ttl_s is not None else self.ttl_s)
        return f"{self.base_url}/media/{name}", media

    @staticmethod
    def _name(extension: str) -> str:
        if extension not in _CONTENT_TYPES:
            raise ValueError(f"unsupported media extension {extension!r}")
        return f"{secrets.token_urlsafe(_TOKEN_BYTES)}.{extension}"

    def _write(self, name: str, audio: bytes) -> None:
        """``audio`` kept in memory as ``name``; its file written at once outside an event loop
        (or without :attr:`write_behind`), else once it leaves memory."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            behind = False
        else:
            behind = self.write_behind
        if behind:
            self._memory_only.add(name)
        else:
            _write_file(self.directory / name, audio)
        self._keep(name, audio)

    def _spill(self, name: str, audio: bytes) -> asyncio.Task[None]:
        """The task writing ``name``'s file (``audio``) in a worker thread, started now unless
        it is under way; until it ends the audio is served from memory."""
        under_way = self._writes.get(name)
        if under_way is not None:
            return under_way[0]
        task = asyncio.get_running_loop().create_task(
            self._write_out(name, audio), name="oyez-media-write"
        )
        self._writes[name] = (task, audio)
        return task

    async def _write_out(self, name: str, audio: bytes) -> None:
        path = self.directory / name
        try:
            await asyncio.to_thread(_write_file, path, audio)
        except OSError as exc:  # served from memory while it is kept, then 404
            log.error("http: media %s could not be written to %s: %s", name, self.directory, exc)
        finally:
            self._memory_only.discard(name)
            self._writes.pop(name, None)
        if name not in self._expiry:  # expired while it was written
            path.unlink(missing_ok=True)

    async def settle(self) -> None:
        """Returns once every file write under way has ended (written, or failed)."""
        while self._writes:
            await asyncio.wait({task for task, _ in self._writes.values()})

    def _keep(self, name: str, audio: bytes) -> None:
        """``audio`` kept in memory as ``name``; the oldest let go past
        :data:`KEPT_IN_MEMORY_BYTES`, written to their files first if they have none."""
        kept = self._kept
        kept[name] = audio
        total = sum(len(data) for data in kept.values())
        while total > KEPT_IN_MEMORY_BYTES and kept:
            old, data = kept.popitem(last=False)
            total -= len(data)
            if old in self._memory_only and old in self._expiry:
                self._spill(old, data)

    def path(self, name: str) -> Path | None:
        """The file behind ``name`` while it is valid, else None."""
        expiry = self._expiry.get(name)
        if expiry is None:
            return None
        if self.clock() >= expiry:
            self._remove(name)
            return None
        return self.directory / name

    def _in_memory(self, name: str) -> bytes | None:
        """``name``'s audio while memory holds it (kept, or being written), else None."""
        kept = self._kept.get(name)
        if kept is not None:
            return kept
        writing = self._writes.get(name)
        return writing[1] if writing is not None else None

    def audio(self, name: str) -> bytes | None:
        """What a GET of ``name`` answers now (from memory, else its file), or None when
        ``name`` is no valid media (or not made yet)."""
        path = self.path(name)
        if path is None or name in self._growing:
            return None
        kept = self._in_memory(name)
        if kept is not None:
            return kept
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def sweep(self) -> int:
        """Remove expired files; returns how many."""
        now = self.clock()
        expired = [name for name, expiry in self._expiry.items() if now >= expiry]
        for name in expired:
            self._remove(name)
        return len(expired)

    def _remove(self, name: str) -> None:
        self._expiry.pop(name, None)
        self._growing.pop(name, None)
        self._kept.pop(name, None)
        self._memory_only.discard(name)  # a write under way removes its file when it ends
        (self.directory / name).unlink(missing_ok=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.path(name)
        growing = self._growing.get(name) if path is not None else None
        whole = request.method == "GET" and (
            request.headers.get("Range", "bytes=0-").replace(" ", "") == "bytes=0-"
        )
        if growing is not None:
            if whole:
                return await self._stream(request, name, growing)
            await growing.wait()  # HEAD, Range: only a whole file has a length
            path = self.path(name)
        if path is None:
            return json_error(404, "no such media, or it expired")
        kept = self._in_memory(name)
        if kept is not None and whole:  # a server may ignore a Range: RFC 9110 §14.2
            headers = {"Content-Type": _content_type(name), "Accept-Ranges": "bytes"}
            return web.Response(body=kept, headers=headers)
        if kept is not None and name in self._memory_only:  # HEAD, Range: the file answers
            await self._spill(name, kept)
        if not path.is_file():
            return json_error(404, "no such media, or it expired")
        return web.FileResponse(path, headers={"Content-Type": _content_type(name)})

    @staticmethod
    async def _stream(request: web.Request, name: str, growing: GrowingMedia) -> web.StreamResponse:
        """``growing`` as it is made, chunked; a fetch that finds nothing made fails (503)."""
        parts = growing.parts()
        first = await anext(parts, None)
        if first is None:
            return json_error(503, f"the media could not be made: {growing.error or 'empty'}")
        response = web.StreamResponse(headers={"Content-Type": _content_type(name)})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await response.write(first)
            async for part in parts:
                await response.write(part)
            await response.write_eof()
        except ConnectionResetError:  # the player went away (or skipped): nothing to answer
            log.debug("http: %s: the player closed the connection", request.path)
        return response


def _content_type(name: str) -> str:
    return _CONTENT_TYPES[name.rsplit(".", 1)[-1]]


def _write_file(path: Path, audio: bytes) -> None:
    """``audio`` into ``path`` whole or not at all (written beside it, then renamed)."""
    temporary = path.with_suffix(".part")
    temporary.write_bytes(audio)
    temporary.replace(path)


class OyezServer:
    """The aiohttp application and its lifecycle.

    ``announcer`` enables ``POST /api/v1/announce`` and ``GET /api/v1/requests/{id}`` (when
    ``settings.api_token`` is set). ``media`` replaces the default :class:`MediaStore` in
    ``<data_dir>/media`` (several processes share :class:`bot.web.media.SharedMediaStore`);
    ``serve_media`` False: no ``/media`` route (a process without the api role).
    """

    def __init__(
        self,
        settings: HttpSettings,
        data_dir: Path,
        announcer: Announcer | None = None,
        media: MediaStore | None = None,
        *,
        serve_media: bool = True,
    ) -> None:
        self.settings = settings
        self.media = media or MediaStore(
            data_dir / "media", settings.base_url(), settings.media_ttl_s
        )
        self.announcer = announcer
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
        if serve_media:
            self.app.router.add_get("/media/{name}", self.media.handle)  # HEAD too
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None
        if announcer is not None:
            self.add_routes(
                [
                    web.post(f"{API_PREFIX}/announce", self.authorized(self._announce)),
                    web.get(f"{API_PREFIX}/requests/{{id}}", self.authorized(self._request)),
                ]
            )

    @property
    def api_enabled(self) -> bool:
        return self.settings.api_token is not None

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        self.app.router.add_routes(routes)

    def authorized(self, handler: Handler) -> Handler:
        """``handler`` behind the API token: 404 when the API is off, 401 without the right
        bearer token (compared in constant time)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self.settings.api_token
            if token is None:
                return json_error(404, "the API is off: set http.api_token to turn it on")
            given = request.headers.get("Authorization", "")
            scheme, _, credentials = given.partition(" ")
            expected = token.get_secret_value().encode()
            # undecodable header bytes reach us as surrogates: kept, they can only mismatch
            offered = credentials.strip().encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
                return json_error(401, "missing or wrong bearer token")
            return await handler(request)

        return guarded

    async def read_json(self, request: web.Request) -> Any:
        """The request's JSON body (at most :data:`MAX_BODY` bytes, else a 413). Raises
        :class:`BadRequest` naming what is wrong: an unknown charset, text that is not in it,
        JSON that does not parse or is nested too deeply to read."""
        body = await request.read()
        charset = request.charset or "utf-8"
        try:
            text = body.decode(charset)
        except LookupError:
            raise BadRequest(f"unknown charset {charset[:40]!r} in Content-Type") from None
        except UnicodeDecodeError:
            raise BadRequest(f"the body is not valid {charset} text") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise BadRequest("the body is not valid JSON") from None
        except RecursionError:
            raise BadRequest("the body's JSON is nested too deeply") from None

    async def _announce(self, request: web.Request) -> web.StreamResponse:
        assert self.announcer is not None
        data = await self.read_json(request)
        status = await self.announcer.submit(data, RequestSource.HTTP, requester="http")
        if status.state.final and status.code == "invalid":
            return json_error(422, status.reason or "invalid announcement", request_id=status.id)
        return web.json_response(
            {"request_id": status.id, "state": status.state.value},
            status=202,
            headers={"Location": f"{API_PREFIX}/requests/{status.id}"},
        )

    async def _request(self, request: web.Request) -> web.StreamResponse:
        assert self.announcer is not None
        status = await self.announcer.find(request.match_info["id"])
        if status is None:
            return json_error(404, "no such request (requests are kept for a while, not forever)")
        return web.json_response(status)

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0: any free port, then in :attr:`port`)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.settings.port
        if self.settings.public_url is None:
            self.media.base_url = f"http://127.0.0.1:{self.port}"
        self._sweeper = asyncio.create_task(self._sweep(), name="oyez-media-sweeper")
        log.info(
            "http: listening on %s:%s; media at %s; API %s",
            self.settings.host,
            self.port,
            self.media.base_url,
            "on" if self.api_enabled else "off (no http.api_token)",
        )

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.media.sweep()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.media.settle()
