"""The audio cache's index in the engine's server (``engine.url`` set), its files on a volume
every process mounts (``cache.dir``): audio one process made is a hit in every other, also on
another machine (an SQLite index on a network volume is not safe to share: its locks and
write-ahead log need one machine's memory).

Keys, under the engine's prefix: ``cache:e:<key>`` a hash (``file``, ``bytes``, ``checksum``,
``meta``: the entry's description as JSON, ``hits``), ``cache:lru`` a sorted set of keys by
last use (Unix seconds), ``cache:bytes`` the total size and ``cache:counts`` the hits and misses.
Adding an entry and evicting the least recently used down to ``max_bytes`` is one Lua script,
so every process keeps one cap; the evicted files are removed by the process that evicted them.
The files are written to a temporary name and renamed (:func:`~bot.synthesis.cache.store_file`),
and checked against the index's size and checksum when read.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.ops.metrics import CACHE_LOOKUPS
from bot.speech import OutputProfile, Voice
from bot.synthesis.cache import CacheEntry, CacheStats, checksum, read_checked, store_file

if TYPE_CHECKING:  # redis is imported only when engine.url is set (bot.ops.engine)
    from redis.asyncio import Redis

__all__ = ["RedisAudioCache"]

# KEYS: entry, lru, bytes. ARGV: key, file, size, checksum, meta, now, max bytes, entry prefix.
# The files of the entries evicted.
_PUT = """
local old = redis.call('HGET', KEYS[1], 'bytes')
if old then redis.call('DECRBY', KEYS[3], old) end
redis.call('HSET', KEYS[1], 'file', ARGV[2], 'bytes', ARGV[3], 'checksum', ARGV[4],
           'meta', ARGV[5], 'hits', 0)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
local total = redis.call('INCRBY', KEYS[3], ARGV[3])
local evicted = {}
while total > tonumber(ARGV[7]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  local entry = ARGV[8] .. oldest
  local file, size = unpack(redis.call('HMGET', entry, 'file', 'bytes'))
  redis.call('DEL', entry)
  redis.call('ZREM', KEYS[2], oldest)
  if size then total = redis.call('DECRBY', KEYS[3], size) end
  if file then table.insert(evicted, file) end
end
return evicted
"""

# KEYS: entry, lru, counts. ARGV: key, now. 1 when it was there (a hit counted).
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'hits', 1)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'hit', 1)
return 1
"""

# KEYS: entry, lru, bytes. ARGV: key.
_DROP = """
local size = redis.call('HGET', KEYS[1], 'bytes')
if size then redis.call('DECRBY', KEYS[3], size) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: lru, bytes, counts. ARGV: entry prefix. The files of every entry.
_CLEAR = """
local files = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local entry = ARGV[1] .. key
  local file = redis.call('HGET', entry, 'file')
  if file then table.insert(files, file) end
  redis.call('DEL', entry)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return files
"""


class RedisAudioCache:
    """:class:`~bot.synthesis.cache.Cache` with its index in Redis. The client must decode
    responses; it belongs to the caller. ``clock``: Unix seconds (last use)."""

    def __init__(
        self, directory: Path, max_bytes: int, client: Redis, prefix: str = "oyez:"
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.client = client
        self.prefix = f"{prefix}cache:"
        directory.mkdir(parents=True, exist_ok=True)
        self._put = client.register_script(_PUT)
        self._touch = client.register_script(_TOUCH)
        self._drop = client.register_script(_DROP)
        self._clear = client.register_script(_CLEAR)

    def _entry(self, key: str) -> str:
        return f"{self.prefix}e:{key}"

    @property
    def _lru(self) -> str:
        return f"{self.prefix}lru"

    @property
    def _bytes(self) -> str:
        return f"{self.prefix}bytes"

    @property
    def _counts(self) -> str:
        return f"{self.prefix}counts"

    async def contains(self, key: str) -> bool:
        return bool(await self.client.exists(self._entry(key)))

    async def get(self, key: str) -> CacheEntry | None:
        found = await self.client.hmget(self._entry(key), ["file", "bytes", "checksum", "meta"])
        file, size, digest, meta = (None if v is None else str(v) for v in found)
        if file is None or size is None or meta is None:
            await self._miss()
            return None
        audio = await asyncio.to_thread(read_checked, self.directory / file, int(size), digest)
        if audio is None:
            await self._drop(keys=[self._entry(key), self._lru, self._bytes], args=[key])
            (self.directory / file).unlink(missing_ok=True)
            await self._miss()
            return None
        keys = [self._entry(key), self._lru, self._counts]
        if not await self._touch(keys=keys, args=[key, time.time()]):
            await self._miss()  # evicted since: its file may be gone
            return None
        CACHE_LOOKUPS.labels("hit").inc()
        return _entry(key, audio, json.loads(meta))

    async def touch(self, key: str) -> None:
        keys = [self._entry(key), self._lru, self._counts]
        if not await self._touch(keys=keys, args=[key, time.time()]):
            await self.client.hincrby(self._counts, "hit", 1)  # evicted since: counted still
        CACHE_LOOKUPS.labels("hit").inc()

    async def _miss(self) -> None:
        await self.client.hincrby(self._counts, "miss", 1)
        CACHE_LOOKUPS.labels("miss").inc()

    async def put(self, entry: CacheEntry) -> None:
        if len(entry.audio) > self.max_bytes:
            return
        name = await asyncio.to_thread(store_file, self.directory, entry)
        v = entry.voice
        meta: list[Any] = [entry.profile.value, entry.sample_rate, entry.channels]
        meta += [entry.duration_s, entry.loudness_lufs, v.provider, v.model, v.id, v.name]
        meta.append(v.language)
        args: list[Any] = [entry.key, name, len(entry.audio), checksum(entry.audio)]
        args += [json.dumps(meta), time.time(), self.max_bytes, f"{self.prefix}e:"]
        keys = [self._entry(entry.key), self._lru, self._bytes]
        evicted = await self._put(keys=keys, args=args)
        await asyncio.to_thread(self._remove, [str(f) for f in evicted])

    def _remove(self, files: list[str]) -> None:
        for file in files:
            (self.directory / file).unlink(missing_ok=True)

    async def stats(self) -> CacheStats:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zcard(self._lru)
            pipe.get(self._bytes)
            pipe.hmget(self._counts, ["hit", "miss"])
            entries, size, (hits, misses) = await pipe.execute()
        return CacheStats(
            int(entries), int(size or 0), self.max_bytes, int(hits or 0), int(misses or 0)
        )

    async def clear(self) -> int:
        keys = [self._lru, self._bytes, self._counts]
        files = await self._clear(keys=keys, args=[f"{self.prefix}e:"])
        await asyncio.to_thread(self._remove, [str(f) for f in files])
        return len(files)

    def close(self) -> None:
        """Nothing to close: the client is the engine's."""


def _entry(key: str, audio: bytes, meta: list[Any]) -> CacheEntry:
    profile, rate, channels, duration, loudness, provider, model, voice, name, language = meta
    return CacheEntry(
        key,
        audio,
        OutputProfile(profile),
        int(rate),
        int(channels),
        float(duration),
        loudness,
        Voice(provider, model, voice, name, language),
    )
