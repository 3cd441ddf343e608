"""A real Home Assistant (2025.4.4) on 127.0.0.1 for the tests, and a plain websocket observer.

- :func:`install` runs ``tests/support/install_homeassistant.sh`` (idempotent: a cached virtual
  environment under ``~/.cache/oyez`` is reused) and returns the venv.
- :class:`HomeAssistant` writes a ``configuration.yaml`` (the demo integration on a free
  loopback port, media sources, Oyez's ffmpeg as Home Assistant's), starts ``hass -c DIR
  --skip-pip``, waits for ``GET /api/onboarding``, gets an administrator's long-lived token
  through the onboarding API, and can restart mid-test.
- :class:`Observer` is the test's own websocket connection (deliberately not Oyez's client):
  it records events of chosen types, fires events, reads states and calls services.
- The ``homeassistant`` session fixture: skips with the reason when Home Assistant cannot be
  installed or started, or fails instead when ``OYEZ_REQUIRE_HA=1`` (as in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import pytest

from bot.audio.transcode import find_ffmpeg

__all__ = [
    "REQUIRED",
    "HomeAssistant",
    "HomeAssistantUnavailable",
    "Observer",
    "homeassistant",
    "install",
]

INSTALL_SCRIPT = Path(__file__).with_name("install_homeassistant.sh")
#: Set by .ci/run: Home Assistant must run, the tests fail rather than skip.
REQUIRED = os.environ.get("OYEZ_REQUIRE_HA") == "1"
# The environment as the session started (an autouse fixture removes OYEZ_* per test, and the
# install script reads OYEZ_HA_VENV / OYEZ_HA_PYTHON).
_ENVIRONMENT = dict(os.environ)

CONFIGURATION = """\
homeassistant:
  name: Oyez tests
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
websocket_api:
demo:
media_source:
ffmpeg:
  ffmpeg_bin: {ffmpeg}
"""


class HomeAssistantUnavailable(RuntimeError):
    """Home Assistant could not be installed or started; the message says why."""


def install(timeout_s: float = 900.0) -> Path:
    """The Home Assistant venv, installed on first use. Raises HomeAssistantUnavailable."""
    try:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=_ENVIRONMENT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HomeAssistantUnavailable(f"installing took over {timeout_s:g} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise HomeAssistantUnavailable(f"{INSTALL_SCRIPT.name} failed: {tail}")
    venv = Path(done.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "hass").is_file():
        raise HomeAssistantUnavailable(f"no hass in {venv}")
    return venv


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HomeAssistant:
    """One Home Assistant process serving ``config_dir`` on ``127.0.0.1:port``."""

    def __init__(self, venv: Path, config_dir: Path, port: int) -> None:
        self.venv = venv
        self.config_dir = config_dir
        self.port = port
        self.token: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        config_dir.mkdir(parents=True, exist_ok=True)
        # Home Assistant's own ffmpeg (TTS audio to MP3, announcements to satellites): the one
        # Oyez uses, as the machine may have none on the PATH
        configuration = CONFIGURATION.format(port=port, ffmpeg=find_ffmpeg())
        (config_dir / "configuration.yaml").write_text(configuration)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/websocket"

    def log_tail(self, lines: int = 15) -> str:
        path = self.config_dir / "hass.out"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, timeout_s: float = 120.0) -> None:
        """Start ``hass`` and wait until it answers. Raises HomeAssistantUnavailable."""
        with (self.config_dir / "hass.out").open("ab") as out:
            self._process = subprocess.Popen(
                [str(self.venv / "bin" / "hass"), "-c", str(self.config_dir), "--skip-pip"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_ENVIRONMENT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HomeAssistantUnavailable(
                    f"hass exited with status {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                answer = urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=2)  # noqa: S310
                with answer as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise HomeAssistantUnavailable(
            f"Home Assistant did not answer within {timeout_s:g} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def restart(self) -> None:
        """Stop (gracefully: it saves its state) and start again, from a running test."""
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)

    def onboard(self) -> str:
        """Create the owner through the onboarding API; returns a long-lived token."""
        self.token = asyncio.run(self._onboard())
        return self.token

    async def _onboard(self) -> str:
        client_id = f"{self.url}/"
        async with aiohttp.ClientSession() as session:
            reply = await session.post(
                f"{self.url}/api/onboarding/users",
                json={
                    "client_id": client_id,
                    "name": "Oyez tests",
                    "username": "oyez",
                    "password": secrets.token_urlsafe(16),
                    "language": "en",
                },
            )
            if reply.status != 200:
                raise HomeAssistantUnavailable(f"onboarding answered HTTP {reply.status}")
            code = (await reply.json())["auth_code"]
            reply = await session.post(
                f"{self.url}/auth/token",
                data={"grant_type": "authorization_code", "code": code, "client_id": client_id},
            )
            access = (await reply.json())["access_token"]
            async with session.ws_connect(self.websocket_url) as ws:
                await ws.receive_json()
                await ws.send_json({"type": "auth", "access_token": access})
                if (await ws.receive_json())["type"] != "auth_ok":
                    raise HomeAssistantUnavailable("the onboarding token was refused")
                await ws.send_json(
                    {
                        "id": 1,
                        "type": "auth/long_lived_access_token",
                        "client_name": "oyez-tests",
                        "lifespan": 365,
                    }
                )
                answer = await ws.receive_json()
                if not answer.get("success"):
                    raise HomeAssistantUnavailable(f"no long-lived token: {answer}")
                return str(answer["result"])


@pytest.fixture(scope="session")
def homeassistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """A running, onboarded Home Assistant with the demo integration, for the session."""
    instance: HomeAssistant | None = None
    try:
        venv = install()
        instance = HomeAssistant(venv, tmp_path_factory.mktemp("homeassistant"), free_port())
        instance.start()
        instance.onboard()
    except HomeAssistantUnavailable as exc:
        if instance is not None:
            instance.stop()
        if REQUIRED:
            pytest.fail(f"Home Assistant is required (OYEZ_REQUIRE_HA=1) but: {exc}")
        pytest.skip(f"no Home Assistant to test against: {exc}")
    assert instance is not None
    yield instance
    instance.stop()


class Observer:
    """The test's own view of Home Assistant over a websocket.

    ``events`` records, in order, every event of the types given (``{"event_type", "data",
    "time_fired", ...}`` as Home Assistant sends them).
    """

    def __init__(self, ha: HomeAssistant, event_types: tuple[str, ...]) -> None:
        self.ha = ha
        self.event_types = event_types
        self.events: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        assert self.ha.token is not None
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.ha.websocket_url, max_msg_size=0)
        await self._ws.receive_json()
        await self._ws.send_json({"type": "auth", "access_token": self.ha.token})
        assert (await self._ws.receive_json())["type"] == "auth_ok"
        self._reader = asyncio.create_task(self._read())
        for event_type in self.event_types:
            await self.command({"type": "subscribe_events", "event_type": event_type})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data.get("type") == "event":
                self.events.append(data["event"])
                self._changed.set()
                continue
            future = self._pending.pop(data.get("id"), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def command(self, message: dict[str, Any]) -> Any:
        """Send a command; returns its result, raises AssertionError with the error."""
        assert self._ws is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with self._lock:
            self._next_id += 1
            self._pending[self._next_id] = future
            await self._ws.send_json({"id": self._next_id, **message})
        async with asyncio.timeout(30):
            answer = await future
        if answer.get("type") == "result" and not answer.get("success"):
            raise AssertionError(f"Home Assistant refused {message['type']}: {answer['error']}")
        return answer.get("result")

    async def fire(self, event_type: str, data: Any) -> None:
        await self.command({"type": "fire_event", "event_type": event_type, "event_data": data})

    async def state(self, entity_id: str) -> dict[str, Any]:
        states = await self.command({"type": "get_states"})
        return next(s for s in states if s["entity_id"] == entity_id)

    async def wait_event(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 60.0,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first recorded event matching ``predicate`` (from event number ``since`` on: a
        ``len(events)`` taken earlier), waiting for it."""
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events[since:]:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def wait_state(
        self,
        entity_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                state = await self.state(entity_id)
                if predicate(state):
                    return state
                await asyncio.sleep(0.1)

    def request_events(self, request_id: str) -> list[dict[str, Any]]:
        """The recorded events whose data carries ``request_id``."""
        return [e for e in self.events if (e.get("data") or {}).get("request_id") == request_id]


@contextlib.asynccontextmanager
async def observing(ha: HomeAssistant, *event_types: str) -> AsyncIterator[Observer]:
    async with Observer(ha, event_types) as observer:
        yield observer
