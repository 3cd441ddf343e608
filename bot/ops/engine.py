"""The engine: where the state that several Oyez processes share lives, and its stores.

``engine.url`` unset (the default): embedded, exactly as a single process has always kept it
(SQLite in ``data_dir``, memory). Set to a Redis or Valkey URL: every process given the same URL
(and ``engine.key_prefix``) shares the stores built here: the rate limiters' buckets
(:class:`~bot.providers.shared_ratelimit.SharedRateLimiter`), the books
(:class:`~bot.providers.books.Books`: the credit circuit, balances, budgets' spend and holds),
paid jobs under way in a provider's queue (:mod:`bot.providers.jobs`),
the schedules' fire claims (:class:`~bot.schedules.claims.FireClaims`), leases
(:mod:`bot.ops.leases`: who holds Home Assistant's event subscription), synthesis flights
(:mod:`bot.synthesis.flights`), the synth workers' jobs (:mod:`bot.synthesis.remote`),
the audio cache's index (:mod:`bot.synthesis.shared_cache`),
the announcements' duplicate window and statuses (:mod:`bot.announce.shared`), and media
URLs that any process serves (:class:`~bot.web.media.SharedMediaStore`; its files on the data
folder all of them mount).

:meth:`Engine.open` connects and checks the server answers, so a wrong URL stops ``oyez run``
at start-up with :class:`EngineUnavailable` naming the URL (its password masked) rather than
failing every paid request later. Client: redis-py's asyncio client
(https://redis.readthedocs.io/en/stable/connections.html#redis.asyncio.client.Redis.from_url).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit, urlunsplit

from bot.announce.shared import (
    DuplicateWindow,
    LocalDuplicateWindow,
    LocalStatusBoard,
    StatusBoard,
)
from bot.errors import ConfigError
from bot.ops.config import EngineSettings, Settings
from bot.ops.leases import Leases, LocalLeases
from bot.ops.logs import register_secret
from bot.providers.books import Books
from bot.providers.credits import Ledger
from bot.providers.jobs import LocalJobs, QueuedJobs
from bot.schedules.claims import FireClaims, LocalClaims
from bot.synthesis.cache import AudioCache, Cache
from bot.synthesis.flights import Flights, LocalFlights

# redis-py (~0.15 s to import) and the shared stores are imported when engine.url is set: one
# process (`oyez say`, the default `oyez run`) never pays for them.
if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bot.providers.ratelimit import RateLimiter
    from bot.synthesis.remote import SynthQueue
    from bot.web.server import MediaStore

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "POOL_WAIT_S",
    "Engine",
    "EngineUnavailable",
    "masked_url",
]

log = logging.getLogger(__name__)

#: Seconds to connect to the server (start-up, and every reconnection).
CONNECT_TIMEOUT_S = 5.0
#: Seconds a command waits for the server's answer before it fails (a server that accepts the
#: connection but never answers must not hang Oyez). Above every blocking read Oyez makes (BLOCK
#: of at most 2 s), since redis-py applies it to those too.
COMMAND_TIMEOUT_S = 15.0
#: Connections one process opens to the server at most.
MAX_CONNECTIONS = 32
#: Seconds a command waits for one of them when all are busy.
POOL_WAIT_S = 20.0


class EngineUnavailable(ConfigError):
    """``engine.url`` names a server that cannot be reached (or refused the password)."""


def masked_url(url: str) -> str:
    """``url`` with its password (and a user name, if any) replaced by ``***``:
    ``redis://:s3cret@redis:6379/0`` → ``redis://:***@redis:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = "***" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Engine:
    """The shared client (None when embedded) and a factory of each store.

    An async context manager: ``async with await Engine.open(settings.engine) as engine``; it
    closes only the client it opened.
    """

    def __init__(self, settings: EngineSettings, client: Redis | None = None) -> None:
        self.settings = settings
        self.client = client

    @classmethod
    async def open(cls, settings: EngineSettings) -> Engine:
        """The engine ``settings`` describe, its server checked with ``PING``.

        Raises :class:`EngineUnavailable` (naming the masked URL and why) when it does not
        answer within :data:`CONNECT_TIMEOUT_S`."""
        if settings.url is None:
            return cls(settings)
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.exceptions import RedisError

        password = urlsplit(settings.url).password
        if password:
            register_secret(password)
        # blocking: past MAX_CONNECTIONS calls at once, a call waits for a connection rather
        # than failing (redis-py's default pool raises "Too many connections")
        pool = BlockingConnectionPool.from_url(
            settings.url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
            health_check_interval=30,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
        )
        client = Redis.from_pool(pool)
        shown = masked_url(settings.url)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise EngineUnavailable(
                f"engine.url {shown} does not answer: {type(exc).__name__}: {exc}. Start the "
                "Redis (or Valkey) server, correct OYEZ_ENGINE__URL, or unset it to run as one "
                "process"
            ) from None
        log.info("engine: sharing state through %s", shown)
        return cls(settings, client)

    @property
    def embedded(self) -> bool:
        """True when no server is configured: this process keeps everything itself."""
        return self.client is None

    def books(self, data_dir: Path, now: Callable[[], datetime] | None = None) -> Books:
        """The credit circuit, balances and spend: shared when a server is configured, else
        the SQLite ledger in ``data_dir``."""
        if self.client is None:
            return Ledger(data_dir, now=now)
        from bot.providers.redis_ledger import RedisLedger

        return RedisLedger(self.client, self.settings.key_prefix, now=now)

    def limiter_factory(self) -> Callable[..., RateLimiter] | None:
        """What makes the dispatcher's buckets: shared ones (one per provider or model for
        every process) when a server is configured; None when embedded (its own)."""
        if self.client is None:
            return None
        from bot.providers.shared_ratelimit import SharedRateLimiter

        return functools.partial(
            SharedRateLimiter, client=self.client, prefix=self.settings.key_prefix
        )

    def queued_jobs(self) -> QueuedJobs:
        """Paid jobs submitted to a provider's queue (Segmind v2), by what was submitted:
        shared when a server is configured, so another process resumes polling one."""
        if self.client is None:
            return LocalJobs()
        from bot.providers.jobs import RedisJobs

        return RedisJobs(self.client, self.settings.key_prefix)

    def fire_claims(self) -> FireClaims:
        """Which process speaks each schedule firing: shared when a server is configured."""
        if self.client is None:
            return LocalClaims()
        from bot.schedules.claims import RedisClaims

        return RedisClaims(self.client, self.settings.key_prefix)

    def leases(self) -> Leases:
        """One holder at a time of a named duty (Home Assistant's event subscription), with
        a fencing token: shared when a server is configured. Each call is a new holder."""
        if self.client is None:
            return LocalLeases()
        from bot.ops.leases import RedisLeases

        return RedisLeases(self.client, self.settings.key_prefix)

    def audio_cache(self, directory: Path, max_bytes: int) -> Cache:
        """The audio cache in ``directory`` (capped at ``max_bytes``): its index in the server
        when one is configured (the files on the volume every process mounts), else SQLite."""
        if self.client is None:
            return AudioCache(directory, max_bytes)
        from bot.synthesis.shared_cache import RedisAudioCache

        return RedisAudioCache(directory, max_bytes, self.client, self.settings.key_prefix)

    def flights(self) -> Flights:
        """Who synthesizes a cache key several callers missed at once: shared when a server
        is configured."""
        if self.client is None:
            return LocalFlights()
        from bot.synthesis.flights import RedisFlights

        return RedisFlights(self.client, self.settings.key_prefix)

    def synth_queue(self) -> SynthQueue | None:
        """The synthesis jobs' stream of the synth workers (:mod:`bot.synthesis.remote`);
        None when embedded (no process but this one to make them)."""
        if self.client is None:
            return None
        from bot.synthesis.remote import SynthQueue

        return SynthQueue(self.client, self.settings.key_prefix)

    def duplicate_window(self) -> DuplicateWindow:
        """Which message went to which target lately: shared when a server is configured."""
        if self.client is None:
            return LocalDuplicateWindow()
        from bot.announce.shared import RedisDuplicateWindow

        return RedisDuplicateWindow(self.client, self.settings.key_prefix)

    def status_board(self) -> StatusBoard:
        """Announcements' latest statuses: shared when a server is configured."""
        if self.client is None:
            return LocalStatusBoard()
        from bot.announce.shared import RedisStatusBoard

        return RedisStatusBoard(self.client, self.settings.key_prefix)

    def media_store(self, settings: Settings) -> MediaStore | None:
        """Media URLs every process serves (files in ``<data_dir>/media``, which they all
        mount) when a server is configured; None when embedded (the server's own store)."""
        if self.client is None:
            return None
        from bot.web.media import SharedMediaStore

        http = settings.http
        return SharedMediaStore(settings.data_dir / "media", http.base_url(), http.media_ttl_s)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
