"""Queued jobs: a paid job submitted to a provider's queue (Segmind v2) is recorded before it
is polled, so a process that takes the same synthesis over polls that job instead of submitting
(and paying for) it again.

A job is named by a key its provider derives from what it submits (model and payload, hashed:
:func:`job_key`), the same in every process: when the process polling a job dies, the synthesis
is taken over by another (the flight's lease lapses, :mod:`bot.synthesis.flights`, or the
request is sent again), which submits the same payload, finds the recorded provider's request
id under the same key and polls it. A record lasts until the job's result has been fetched or
the job failed (:meth:`~QueuedJobs.forget`), at most ``ttl_s`` (the job's timeout).

Two implementations: :class:`LocalJobs` (embedded: one process, in memory) and
:class:`RedisJobs` (every process sharing one Redis; chosen by :mod:`bot.ops.engine`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = ["LocalJobs", "QueuedJobs", "RedisJobs", "job_key"]


def job_key(provider: str, model: str, payload: Mapping[str, Any]) -> str:
    """``<provider>:<model>:<sha256 of the payload's canonical JSON>``: the same submission
    names the same job in every process."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{provider}:{model}:{digest}"


class QueuedJobs(Protocol):
    async def find(self, key: str) -> str | None:
        """The provider's request id recorded under ``key``, or None (submit it)."""

    async def record(self, key: str, request_id: str, ttl_s: float) -> None:
        """``request_id`` was submitted for ``key``: recorded for ``ttl_s`` seconds."""

    async def forget(self, key: str, request_id: str) -> None:
        """The job ``request_id`` is over (its result fetched, or it failed): a later
        submission of ``key`` is a new job. A newer job recorded under ``key`` stays."""


class LocalJobs:
    """Jobs recorded within one process (``clock``: monotonic seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._jobs: dict[str, tuple[str, float]] = {}

    async def find(self, key: str) -> str | None:
        found = self._jobs.get(key)
        if found is None or found[1] <= self.clock():
            self._jobs.pop(key, None)
            return None
        return found[0]

    async def record(self, key: str, request_id: str, ttl_s: float) -> None:
        now = self.clock()
        self._jobs = {k: v for k, v in self._jobs.items() if v[1] > now}  # the lapsed ones go
        self._jobs[key] = (request_id, now + ttl_s)

    async def forget(self, key: str, request_id: str) -> None:
        if self._jobs.get(key, ("", 0.0))[0] == request_id:
            del self._jobs[key]


# KEYS: the job's key. ARGV: the request id. Deletes it only if it is still that job.
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisJobs:
    """Jobs shared through Redis: key ``<prefix>job:<key>`` holds the provider's request id and
    expires after ``ttl_s`` on the server's clock. The client must decode responses; it belongs
    to the caller."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:
        self.client = client
        self.prefix = prefix
        self._forget = client.register_script(_FORGET)

    def _key(self, key: str) -> str:
        return f"{self.prefix}job:{key}"

    async def find(self, key: str) -> str | None:
        found = await self.client.get(self._key(key))
        return None if found is None else str(found)

    async def record(self, key: str, request_id: str, ttl_s: float) -> None:
        await self.client.set(self._key(key), request_id, px=max(1, round(ttl_s * 1000)))

    async def forget(self, key: str, request_id: str) -> None:
        await self._forget(keys=[self._key(key)], args=[request_id])
