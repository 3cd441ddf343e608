"""The audio cache's conformance suite: each test runs against the embedded cache (SQLite
index) and the shared one (its index in a real Redis, tests/support/redis_server.py), both with
their files in one folder; then two processes' caches on one engine and one folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.ops.config import EngineSettings
from bot.ops.engine import Engine
from bot.speech import OutputProfile, Voice
from bot.synthesis.cache import CacheEntry, HotCache
from tests.support.redis_server import engine, redis_server, redis_url  # noqa: F401

VOICE = Voice("tone", "tone-1", "a", "A", None)


def entry(letter: str, audio: bytes = b"audio", loudness: float | None = None) -> CacheEntry:
    return CacheEntry(letter * 64, audio, OutputProfile.OGG_OPUS, 48_000, 2, 0.5, loudness, VOICE)


async def test_an_entry_is_stored_found_and_counted(engine: Engine, tmp_path: Path) -> None:  # noqa: F811 - the fixture imported above
    cache = engine.audio_cache(tmp_path / "cache", 1_000)
    try:
        stored = entry("a", loudness=-23.5)
        assert await cache.get(stored.key) is None
        assert not await cache.contains(stored.key)
        await cache.put(stored)
        assert await cache.contains(stored.key)
        assert await cache.get(stored.key) == stored
        assert (tmp_path / "cache" / f"{stored.key}.ogg").read_bytes() == b"audio"
        stats = await cache.stats()
        assert (stats.entries, stats.bytes, stats.max_bytes) == (1, 5, 1_000)
        assert (stats.hits, stats.misses) == (1, 1)
        await cache.put(entry("a", b"other"))  # the same key again: replaced, not added
        assert (await cache.stats()).bytes == 5
    finally:
        cache.close()


async def test_the_least_recently_used_goes_first_and_too_big_is_not_kept(
    engine: Engine,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    cache = engine.audio_cache(tmp_path / "cache", 12)
    try:
        for letter in "ab":
            await cache.put(entry(letter, b"four"))
            await asyncio.sleep(0.01)
        assert await cache.get("a" * 64) is not None  # a is used now: b is the oldest
        await asyncio.sleep(0.01)
        await cache.put(entry("c", b"more than 4"))
        assert await cache.get("b" * 64) is None
        assert not (tmp_path / "cache" / f"{'b' * 64}.ogg").exists()
        assert await cache.get("c" * 64) is not None
        assert (await cache.stats()).bytes <= 12
        await cache.put(entry("d", b"far more than twelve bytes"))
        assert not await cache.contains("d" * 64)
    finally:
        cache.close()


async def test_a_hit_from_memory_is_recorded_in_the_shared_index(
    engine: Engine,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Answered from this process's memory (:class:`HotCache`), the hit still counts and
    renews the entry's age in Redis: the least recently used is then the other one."""
    cache = HotCache(engine.audio_cache(tmp_path / "cache", 16), memory_bytes=1_000)
    try:
        for letter in "ab":
            await cache.put(entry(letter, b"four"))
            await asyncio.sleep(0.01)
        assert await cache.get("a" * 64) == entry("a", b"four")  # from memory
        await cache.settle()
        await asyncio.sleep(0.01)
        await cache.put(entry("c", b"more than 4"))  # evicts the least recently used: b
        assert not (tmp_path / "cache" / f"{'b' * 64}.ogg").exists()
        assert await cache.get("b" * 64) is None  # its file gone: not answered from memory
        assert await cache.get("a" * 64) is not None
        stats = await cache.stats()
        assert (stats.hits, stats.misses) == (2, 1)
    finally:
        cache.close()


async def test_a_damaged_file_is_a_miss_and_dropped(engine: Engine, tmp_path: Path) -> None:  # noqa: F811 - the fixture imported above
    cache = engine.audio_cache(tmp_path / "cache", 1_000)
    try:
        await cache.put(entry("a", b"audio"))
        (tmp_path / "cache" / f"{'a' * 64}.ogg").write_bytes(b"audix")  # same size, other bytes
        assert await cache.get("a" * 64) is None
        assert not await cache.contains("a" * 64)
        assert (await cache.stats()).entries == 0
    finally:
        cache.close()


async def test_clear_removes_every_entry_and_file(engine: Engine, tmp_path: Path) -> None:  # noqa: F811 - the fixture imported above
    cache = engine.audio_cache(tmp_path / "cache", 1_000)
    try:
        for letter in "abc":
            await cache.put(entry(letter))
        assert await cache.clear() == 3
        assert not list((tmp_path / "cache").glob("*.ogg"))
        stats = await cache.stats()
        assert (stats.entries, stats.bytes, stats.hits, stats.misses) == (0, 0, 0, 0)
    finally:
        cache.close()


async def test_what_one_process_cached_is_a_hit_in_another(
    redis_url: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    async with (
        await Engine.open(EngineSettings(url=redis_url)) as one,
        await Engine.open(EngineSettings(url=redis_url)) as other,
    ):
        mine = one.audio_cache(tmp_path / "shared", 20)
        theirs = other.audio_cache(tmp_path / "shared", 20)
        await mine.put(entry("a", b"0123456789"))
        assert await theirs.get("a" * 64) == entry("a", b"0123456789")
        await theirs.put(entry("b", b"0123456789"))
        await theirs.put(entry("c", b"0123456789"))  # one cap for both: the oldest (a) goes
        assert await mine.get("a" * 64) is None
        assert (await mine.stats()).entries == 2
