"""What the announcers of several processes share: the duplicate window and request statuses.

- :class:`DuplicateWindow`: "this message went to this target within the last
  ``duplicate_window_s`` seconds", checked and recorded in one step, so that the same message
  arriving at two processes at once is spoken by one. :class:`LocalDuplicateWindow` keeps it in
  memory (embedded, one process), :class:`RedisDuplicateWindow` in Redis (a key per message and
  target that expires with the window, on the server's clock).
- :class:`StatusBoard`: the JSON of each announcement's latest status, so that
  ``GET /api/v1/requests/{id}`` answers whichever process is asked. :class:`LocalStatusBoard`
  (the last :data:`KEPT` in memory) and :class:`RedisStatusBoard` (each kept
  :data:`STATUS_KEPT_S`).

:mod:`bot.ops.engine` builds the Redis ones when ``engine.url`` is set.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from bot.ops.scripts import DELETE_IF_HELD

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = [
    "KEPT",
    "STATUS_KEPT_S",
    "DuplicateWindow",
    "LocalDuplicateWindow",
    "LocalStatusBoard",
    "RedisDuplicateWindow",
    "RedisStatusBoard",
    "StatusBoard",
]

#: Statuses a :class:`LocalStatusBoard` keeps.
KEPT = 1000
#: Seconds a shared status stays readable after its last change.
STATUS_KEPT_S = 3600.0


class DuplicateWindow(Protocol):
    async def claim(self, keys: Sequence[str], request_id: str, window_s: float) -> str | None:
        """Record that ``request_id`` sends to each of ``keys`` (a folded message and a target)
        for ``window_s`` seconds, unless one of them was sent within its window: then nothing
        is recorded and the id of the request that sent it is returned."""

    async def forget(self, keys: Sequence[str], request_id: str) -> None:
        """Drop the records of ``keys`` that ``request_id`` made (it did not play there)."""


class StatusBoard(Protocol):
    async def publish(self, request_id: str, status: dict[str, Any]) -> None:
        """Keep ``status`` (the JSON of ``GET /api/v1/requests/{id}``) as the latest."""

    async def find(self, request_id: str) -> dict[str, Any] | None:
        """The latest status published for ``request_id``; None when none is kept."""


class LocalDuplicateWindow:
    """The window in this process's memory; ``clock`` is Unix seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        #: key -> (until, Unix seconds; the request id that sent it)
        self._recent: dict[str, tuple[float, str]] = {}

    async def claim(self, keys: Sequence[str], request_id: str, window_s: float) -> str | None:
        now = self.clock()
        self._recent = {k: v for k, v in self._recent.items() if v[0] > now}
        earlier = next((self._recent[k][1] for k in keys if k in self._recent), None)
        if earlier is not None:
            return earlier
        for key in keys:
            self._recent[key] = (now + window_s, request_id)
        return None

    async def forget(self, keys: Sequence[str], request_id: str) -> None:
        for key in keys:
            if key in self._recent and self._recent[key][1] == request_id:
                del self._recent[key]


class LocalStatusBoard:
    """The last :data:`KEPT` statuses in this process's memory."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._statuses: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def publish(self, request_id: str, status: dict[str, Any]) -> None:
        self._statuses[request_id] = status
        self._statuses.move_to_end(request_id)
        while len(self._statuses) > self.kept:
            self._statuses.popitem(last=False)

    async def find(self, request_id: str) -> dict[str, Any] | None:
        return self._statuses.get(request_id)


# KEYS: the window's keys. ARGV: request id, window ms. The earlier sender's id, or false.
_CLAIM = """
for _, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner then return owner end
end
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
return false
"""


class RedisDuplicateWindow:
    """The window in Redis: ``<prefix>dup:<sha256 of key>`` holds the sender's request id and
    expires with the window. The client must decode responses; it belongs to the caller."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._forget = client.register_script(DELETE_IF_HELD)

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [f"{self.prefix}dup:{hashlib.sha256(k.encode()).hexdigest()}" for k in keys]

    async def claim(self, keys: Sequence[str], request_id: str, window_s: float) -> str | None:
        if not keys:
            return None
        window_ms = max(1, round(window_s * 1000))
        earlier = await self._claim(keys=self._keys(keys), args=[request_id, window_ms])
        return str(earlier) if earlier else None

    async def forget(self, keys: Sequence[str], request_id: str) -> None:
        if keys:
            await self._forget(keys=self._keys(keys), args=[request_id])


class RedisStatusBoard:
    """Statuses in Redis: ``<prefix>status:<request id>`` holds the JSON, kept
    :data:`STATUS_KEPT_S` after its last change."""

    def __init__(self, client: Redis, prefix: str = "oyez:") -> None:
        self.client = client
        self.prefix = prefix

    async def publish(self, request_id: str, status: dict[str, Any]) -> None:
        key = f"{self.prefix}status:{request_id}"
        await self.client.set(key, json.dumps(status), px=round(STATUS_KEPT_S * 1000))

    async def find(self, request_id: str) -> dict[str, Any] | None:
        found = await self.client.get(f"{self.prefix}status:{request_id}")
        if found is None:
            return None
        status = json.loads(found)
        return status if isinstance(status, dict) else None
