"""The audio cache: a repeat never reaches the provider, and what shapes audio is in the key."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.ops import config
from bot.ops.config import Settings
from bot.providers.base import ProviderRegistry
from bot.speech import OutputProfile, SpeechRequest, Voice
from bot.synthesis.cache import (
    _SCHEMA,
    AudioCache,
    CacheEntry,
    HotCache,
    file_name,
    open_index,
)
from bot.synthesis.pipeline import SpeechPipeline
from integrations import PROVIDERS
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.support.sqlite import HOLD_S, ticks_during, write_locked
from tests.support.tone_provider import ToneProvider

TARGETS = {**PROVIDERS, "tone": "tests.support.tone_provider:ToneProvider"}


@pytest.fixture
def tone() -> type[ToneProvider]:
    ToneProvider.calls.clear()
    ToneProvider.mode = "ok"
    return ToneProvider


def cached_settings(tmp_path: Path, **more: Any) -> Settings:
    return config.load(
        data_dir=tmp_path / "data", cache={"enabled": True, **more.pop("cache", {})}, **more
    )


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[SpeechPipeline]:
    settings = cached_settings(tmp_path)
    speech = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    yield speech
    await speech.aclose()


async def test_a_repeat_is_served_from_the_cache(
    pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    ask = {"text": "Bin day tomorrow.", "provider": "tone"}
    first = await pipeline.speak(SpeechRequest(**ask))
    second = await pipeline.speak(SpeechRequest(**ask))
    assert tone.calls == ["Bin day tomorrow."]  # one provider call for two requests
    assert not first.cached
    assert second.cached
    assert second.audio == first.audio
    assert second.voice == first.voice
    assert second.duration_s == pytest.approx(first.duration_s)
    assert second.timings.synthesis_s == 0
    stats = await pipeline.cache.stats()
    assert (stats.entries, stats.hits, stats.misses) == (1, 1, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"options": {"seconds_per_character": 0.1}},
        {"output": OutputProfile.MP3},
        {"text": "Bin day on Tuesday."},
    ],
)
async def test_anything_that_shapes_the_audio_misses(
    pipeline: SpeechPipeline, tone: type[ToneProvider], change: dict[str, Any]
) -> None:
    ask: dict[str, Any] = {"text": "Bin day tomorrow.", "provider": "tone"}
    await pipeline.speak(SpeechRequest(**ask))
    again = await pipeline.speak(SpeechRequest(**{**ask, **change}))
    assert not again.cached
    assert len(tone.calls) == 2


@pytest.mark.usefixtures("tone")
async def test_whitespace_differences_hit(pipeline: SpeechPipeline) -> None:
    await pipeline.speak(SpeechRequest(text="Dinner is ready.", provider="tone"))
    again = await pipeline.speak(SpeechRequest(text="  Dinner   is ready. ", provider="tone"))
    assert again.cached  # the key holds the normalised text


async def test_audio_settings_are_in_the_key(tmp_path: Path, tone: type[ToneProvider]) -> None:
    for target in (-16, -20):
        settings = cached_settings(tmp_path, audio={"loudness_target_lufs": target})
        speech = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
        try:
            utterance = await speech.speak(SpeechRequest(text="Hello.", provider="tone"))
        finally:
            await speech.aclose()
        assert not utterance.cached
    assert len(tone.calls) == 2


async def test_opting_out_neither_reads_nor_writes(
    pipeline: SpeechPipeline, tone: type[ToneProvider]
) -> None:
    await pipeline.speak(SpeechRequest(text="Hello.", provider="tone", cache=False))
    assert (await pipeline.cache.stats()).entries == 0
    await pipeline.speak(SpeechRequest(text="Hello.", provider="tone"))
    again = await pipeline.speak(SpeechRequest(text="Hello.", provider="tone", cache=False))
    assert not again.cached
    assert len(tone.calls) == 3


@pytest.mark.usefixtures("tone")
async def test_eviction_keeps_under_the_cap_least_recently_used_first(tmp_path: Path) -> None:
    settings = cached_settings(tmp_path, cache={"max_mb": 0.03})  # ~31 KB: a few utterances
    speech = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    texts = [f"Announcement number {word}." for word in ("one", "two", "three", "four", "five")]
    try:
        await speech.speak(SpeechRequest(text=texts[0], provider="tone"))
        for text in texts[1:]:
            await speech.speak(SpeechRequest(text=text, provider="tone"))
            # keep the first one in use: least recently used goes first, not oldest
            assert (await speech.speak(SpeechRequest(text=texts[0], provider="tone"))).cached
        stats = await speech.cache.stats()
        assert stats.bytes <= stats.max_bytes
        assert stats.entries < len(texts)
        files = [p for p in speech.cache.directory.iterdir() if p.suffix == ".ogg"]
        assert len(files) == stats.entries
        last = await speech.speak(SpeechRequest(text=texts[1], provider="tone"))
        assert not last.cached  # evicted
    finally:
        await speech.aclose()


async def test_a_hit_spends_nothing(tmp_path: Path) -> None:
    async with FakeSegmind() as fake:
        settings = cached_settings(
            tmp_path, providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}}
        )
        speech = SpeechPipeline(settings)
        try:
            first = await speech.speak(SpeechRequest(text="Hello there.", provider="segmind"))
            second = await speech.speak(SpeechRequest(text="Hello there.", provider="segmind"))
            assert first.cost_usd == pytest.approx(0.02)
            assert second.cached
            assert second.cost_usd is None
            spent = await speech.dispatcher.ledger.spent_today(provider="segmind")
            assert spent == pytest.approx(0.02)
        finally:
            await speech.aclose()
        assert fake.billed_calls == 1
        assert len(fake.requests) == 1


async def test_fallback_audio_never_answers_for_the_asked_voice(tmp_path: Path) -> None:
    async with FakeSegmind() as fake:
        settings = cached_settings(
            tmp_path, providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}}
        )
        speech = SpeechPipeline(settings)
        fake.inject_error("/v1/chatterbox-tts", 502, "down", count=3)
        try:
            spoken = await speech.speak(SpeechRequest(text="Hello.", provider="segmind"))
            assert spoken.voice.provider == "piper"
            later = await speech.speak(SpeechRequest(text="Hello.", provider="segmind"))
        finally:
            await speech.aclose()
        assert not later.cached
        assert later.voice.provider == "segmind"


async def test_a_locked_index_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache", 1_000_000)
    voice = Voice("tone", "tone-1", "a", "A", None)
    entry = CacheEntry("k" * 64, b"audio", OutputProfile.WAV, 48_000, 1, 0.5, None, voice)
    try:
        await cache.stats()  # opens the index (its tables made)
        with write_locked(tmp_path / "cache" / "index.sqlite3"):
            _, waited_s, ticks = await ticks_during(cache.put(entry))
        assert waited_s >= HOLD_S * 0.8  # the write waited for the other connection's lock...
        assert ticks >= 10  # ...while the event loop went on running other tasks
        assert (await cache.get(entry.key)) == entry
    finally:
        cache.close()


def test_cli_cache_stats_and_clear(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}

    def oyez(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "bot", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    oyez("say", "Hello from the cache.")
    again = oyez("say", "Hello from the cache.")
    assert "from the cache: no provider was called" in again
    assert "model load" not in again  # a cached utterance needs no model
    stats = oyez("cache", "stats")
    assert "entries   1" in stats
    assert "1 hits, 1 misses (50 % hits)" in stats
    assert "removed 1 cached utterances" in oyez("cache", "clear")
    assert "entries   0" in oyez("cache", "stats")


@pytest.mark.parametrize("damage", ["empty", "noise"])
async def test_a_damaged_cached_file_is_dropped_and_synthesized_again(
    tmp_path: Path, tone: type[ToneProvider], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Read from disk: by a process that has not the entry in memory (a restart; here a
    second pipeline), or, for a file cut short, by this one too (its size is checked)."""
    settings = cached_settings(tmp_path)
    ask = {"text": "Bin day tomorrow.", "provider": "tone"}
    first_process = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    later = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    try:
        first = await first_process.speak(SpeechRequest(**ask))
        await first_process.settle()  # its file written
        (file,) = [p for p in first_process.cache.directory.iterdir() if p.suffix == ".ogg"]
        file.write_bytes(b"" if damage == "empty" else os.urandom(len(first.audio)))
        reader = first_process if damage == "empty" else later
        again = await reader.speak(SpeechRequest(**ask))
        assert not again.cached
        assert again.duration_s == pytest.approx(first.duration_s)
        assert tone.calls == ["Bin day tomorrow."] * 2
        assert f"cache: {file} is damaged" in caplog.text
        await reader.settle()
        assert (await later.speak(SpeechRequest(**ask))).cached  # stored again, whole
        assert file.read_bytes() == again.audio
    finally:
        await first_process.aclose()
        await later.aclose()


async def test_a_hit_on_recent_audio_is_answered_from_memory(
    pipeline: SpeechPipeline, tone: type[ToneProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker thread, no read of the index or the file; the use still recorded in the
    index (its hit counted, its age renewed), so eviction and ``oyez cache stats`` see it."""
    ask = {"text": "The bins go out tonight.", "provider": "tone"}
    first = await pipeline.speak(SpeechRequest(**ask))
    cache = pipeline.cache
    assert isinstance(cache, HotCache)
    assert cache.held_bytes == len(first.audio)

    def no_disk(*_: Any, **__: Any) -> Any:
        raise AssertionError("a hit on recent audio read the disk")

    monkeypatch.setattr(AudioCache, "get", no_disk)
    monkeypatch.setattr("bot.synthesis.cache.read_checked", no_disk)
    again = await pipeline.speak(SpeechRequest(**ask))
    assert again.cached and again.audio == first.audio
    assert tone.calls == [ask["text"]]
    stats = await cache.stats()
    assert (stats.hits, stats.entries) == (1, 1)


async def test_audio_cleared_or_evicted_elsewhere_is_not_answered_from_memory(
    tmp_path: Path, tone: type[ToneProvider]
) -> None:
    """Another process (``oyez cache clear``, or its own eviction) removed the file: this
    one's copy in memory is not answered, the text is synthesized again."""
    settings = cached_settings(tmp_path)
    speech = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    ask = {"text": "The post is here.", "provider": "tone"}
    try:
        await speech.speak(SpeechRequest(**ask))
        await speech.settle()  # stored: another process sees it
        other = AudioCache(speech.cache.directory, speech.cache.max_bytes)
        try:
            assert await other.clear() == 1
        finally:
            other.close()
        assert not await speech.will_hit(await speech.prepare(SpeechRequest(**ask)))
        again = await speech.speak(SpeechRequest(**ask))
        assert not again.cached
        assert tone.calls == [ask["text"]] * 2
    finally:
        await speech.aclose()


async def test_memory_holds_the_most_recently_used_up_to_its_size(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    voice = Voice("tone", "sine", "a4", "A4", "en")

    def entry(n: int) -> CacheEntry:
        return CacheEntry(
            f"{n:064x}", bytes([n]) * 1000, OutputProfile.OGG_OPUS, 48000, 2, 1.0, -16.0, voice
        )

    cache = HotCache(AudioCache(folder, 1_000_000), memory_bytes=2500)
    try:
        for n in range(3):
            await cache.put(entry(n))  # the third pushes the first out of memory
        assert cache.held_bytes == 2000
        read: list[str] = []
        inner_get = cache.inner.get

        async def counted(key: str) -> CacheEntry | None:
            read.append(key)
            return await inner_get(key)

        cache.inner.get = counted  # type: ignore[method-assign]
        for n in (1, 2, 0, 0):
            got = await cache.get(entry(n).key)
            assert got is not None and got.audio == entry(n).audio
        assert read == [entry(0).key]  # only the one memory had let go; kept again since
        assert cache.held_bytes == 2000
        big = CacheEntry("f" * 64, b"x" * 3000, OutputProfile.OGG_OPUS, 48000, 2, 3.0, -16.0, voice)
        await cache.put(big)  # larger than memory: on disk only, memory as it was
        assert cache.held_bytes == 2000
        assert (await cache.get(big.key)) == big
        assert (await cache.stats()).hits == 5
    finally:
        await cache.settle()
        cache.close()


async def test_a_fresh_entry_is_answered_at_once_and_stored_right_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``put_behind``: ``put`` returns with the entry in memory; the file and the index row
    follow off the caller's path (answered from memory meanwhile), and a failed write costs the
    entry, never the caller."""
    folder = tmp_path / "cache"
    folder.mkdir()
    voice = Voice("tone", "sine", "a4", "A4", "en")
    entry = CacheEntry("a" * 64, b"x" * 1000, OutputProfile.OGG_OPUS, 48000, 2, 1.0, -16.0, voice)
    cache = HotCache(AudioCache(folder, 1_000_000), memory_bytes=10_000, put_behind=True)
    gate = asyncio.Event()
    inner_put = cache.inner.put

    async def slow_disk(stored: CacheEntry) -> None:
        await gate.wait()
        await inner_put(stored)

    cache.inner.put = slow_disk  # type: ignore[method-assign,assignment]
    try:
        await cache.put(entry)  # returns while the disk is still busy
        assert not (folder / file_name(entry)).exists()
        assert await cache.contains(entry.key)
        assert await cache.get(entry.key) == entry  # from memory, before its file is there
        gate.set()
        stats = await cache.stats()  # settles first
        assert (stats.entries, stats.hits) == (1, 1)  # the early hit counted once it is stored
        assert (folder / file_name(entry)).read_bytes() == entry.audio
        other = AudioCache(folder, 1_000_000)  # another process sees it now
        try:
            assert await other.get(entry.key) == entry
        finally:
            other.close()

        async def full_disk(stored: CacheEntry) -> None:  # noqa: ARG001 - Cache.put's shape
            raise OSError(28, "No space left on device")

        cache.inner.put = full_disk  # type: ignore[method-assign,assignment]
        lost = CacheEntry(
            "b" * 64, b"y" * 1000, OutputProfile.OGG_OPUS, 48000, 2, 1.0, -16.0, voice
        )
        await cache.put(lost)  # no error for the caller: its audio is handed on all the same
        await cache.settle()
        assert "was not stored" in caplog.text and "No space left" in caplog.text
        assert await cache.get(lost.key) is None  # not answered from memory either
    finally:
        await cache.settle()
        cache.close()


async def test_the_pipeline_stores_behind_only_a_cache_no_other_process_reads(
    tmp_path: Path,
) -> None:
    settings = cached_settings(tmp_path)
    alone = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    shared = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    shared.cache_factory = AudioCache  # as the engine's shared cache is made
    try:
        for pipeline, behind in ((alone, True), (shared, False)):
            cache = pipeline.cache
            assert isinstance(cache, HotCache)
            assert cache.put_behind is behind
    finally:
        await alone.aclose()
        await shared.aclose()


async def test_a_garbage_index_is_moved_aside_and_rebuilt(
    tmp_path: Path, tone: type[ToneProvider], caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "data" / "cache" / "index.sqlite3"
    index.parent.mkdir(parents=True)
    index.write_bytes(os.urandom(4096))
    settings = cached_settings(tmp_path)
    speech = SpeechPipeline(settings, ProviderRegistry(settings, TARGETS))
    try:
        spoken = await speech.speak(SpeechRequest(text="Hello.", provider="tone"))
        assert not spoken.cached
        assert (await speech.speak(SpeechRequest(text="Hello.", provider="tone"))).cached
        assert (await speech.cache.stats()).entries == 1
    finally:
        await speech.aclose()
    assert tone.calls == ["Hello."]
    (aside,) = index.parent.glob("index.sqlite3.corrupt-*")
    assert f"cache: index {index} is unreadable" in caplog.text
    assert str(aside) in caplog.text


async def test_an_index_from_before_checksums_gains_the_column(tmp_path: Path) -> None:
    index = tmp_path / "cache" / "index.sqlite3"
    index.parent.mkdir()
    old = sqlite3.connect(index)
    old.executescript(_SCHEMA.replace(",\n    checksum TEXT", ""))
    old.close()
    cache = AudioCache(tmp_path / "cache", 1_000_000)
    voice = Voice("tone", "tone-1", "a", "A", None)
    entry = CacheEntry("a" * 64, b"audio", OutputProfile.WAV, 48_000, 1, 0.5, None, voice)
    try:
        await cache.put(entry)
        assert (await cache.get(entry.key)) == entry
    finally:
        cache.close()


def _sizes(index: Path) -> tuple[int, int]:
    """(the running total the index keeps, the sum of its entries' bytes)."""
    db = sqlite3.connect(index)
    try:
        row = db.execute("SELECT value FROM counters WHERE name = 'bytes'").fetchone()
        (summed,) = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM entries").fetchone()
    finally:
        db.close()
    return (row[0] if row else 0), summed


async def test_the_running_total_of_bytes_follows_every_change(tmp_path: Path) -> None:
    """Eviction reads a total the index keeps (no SUM over every entry per put): it stays the
    sum through puts, a key stored again with other bytes, evictions, a damaged file dropped
    and a clear."""
    folder = tmp_path / "cache"
    index = folder / "index.sqlite3"
    voice = Voice("tone", "tone-1", "a", "A", None)

    def entry(letter: str, size: int) -> CacheEntry:
        return CacheEntry(letter * 64, b"x" * size, OutputProfile.WAV, 48_000, 1, 0.5, None, voice)

    cache = AudioCache(folder, 1_000)
    try:
        for letter, size in (("a", 300), ("b", 300), ("c", 300)):
            await cache.put(entry(letter, size))
        assert _sizes(index) == (900, 900)
        await cache.put(entry("a", 100))  # stored again, smaller
        assert _sizes(index) == (700, 700)
        await cache.put(entry("d", 500))  # over the cap: the least recently used go
        total, summed = _sizes(index)
        assert total == summed <= 1_000
        assert await cache.get("b" * 64) is None  # b was the oldest
        (folder / f"{'c' * 64}.wav").write_bytes(b"short")  # damaged: dropped when read
        assert await cache.get("c" * 64) is None
        assert _sizes(index) == (600, 600)
        assert await cache.clear() == 2
        assert _sizes(index) == (0, 0)
        await cache.put(entry("e", 40))
        assert _sizes(index) == (40, 40)
    finally:
        cache.close()


async def test_an_index_from_before_the_running_total_counts_it_once(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    index = folder / "index.sqlite3"
    old = sqlite3.connect(index)
    old.executescript(_SCHEMA)
    old.execute(
        "INSERT INTO entries (key, file, bytes, profile, sample_rate, channels, duration_s, "
        "provider, model, voice_id, voice_name, created_at, used_at) "
        "VALUES (?, ?, 700, 'wav', 48000, 1, 0.5, 'tone', 'tone-1', 'a', 'A', 0, 0)",
        ("a" * 64, f"{'a' * 64}.wav"),
    )
    old.commit()
    old.close()
    (folder / f"{'a' * 64}.wav").write_bytes(b"x" * 700)
    cache = AudioCache(folder, 1_000)
    try:
        assert (await cache.stats()).bytes == 700
        assert _sizes(index) == (700, 700)
        voice = Voice("tone", "tone-1", "b", "B", None)
        await cache.put(
            CacheEntry("b" * 64, b"y" * 400, OutputProfile.WAV, 48_000, 1, 0.5, None, voice)
        )
        assert _sizes(index) == (400, 400)  # the old entry evicted by the total it was counted in
    finally:
        cache.close()


async def test_an_index_overwritten_while_in_use_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = AudioCache(tmp_path / "cache", 1_000_000)
    voice = Voice("tone", "tone-1", "a", "A", None)
    entry = CacheEntry("b" * 64, b"audio", OutputProfile.WAV, 48_000, 1, 0.5, None, voice)
    try:
        await cache.put(entry)
        for file in (tmp_path / "cache").glob("index.sqlite3*"):
            file.write_bytes(os.urandom(max(file.stat().st_size, 4096)))
        assert await cache.get(entry.key) is None  # a miss, not "file is not a database"
        assert "cache: index" in caplog.text
        await cache.put(entry)
        assert (await cache.get(entry.key)) == entry
        assert (await cache.stats()).entries == 1
    finally:
        cache.close()


async def test_a_miss_is_told_on_the_event_loop_never_for_an_entry_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    voice = Voice("tone", "tone-1", "a", "A", None)
    entry = CacheEntry("e" * 64, b"audio", OutputProfile.WAV, 48_000, 1, 0.5, None, voice)
    cache = HotCache(AudioCache(folder, 1_000_000), memory_bytes=10_000)
    other = AudioCache(folder, 1_000_000)  # another process sharing the folder
    inner = cache.inner
    assert isinstance(inner, AudioCache)
    threads: list[Any] = []
    to_thread = asyncio.to_thread

    async def counted(work: Any, *args: Any) -> Any:
        threads.append(work)
        return await to_thread(work, *args)

    try:
        await cache.stats()  # the index made
        monkeypatch.setattr(asyncio, "to_thread", counted)
        assert await cache.get("m" * 64) is None
        assert threads == []  # no worker thread's round trip before the answer
        await cache.settle()
        assert (await cache.stats()).misses == 1  # counted right after
        await other.put(entry)
        assert not inner.surely_missing(entry.key)  # what another process wrote is there
        assert await cache.get(entry.key) == entry
        for file in folder.glob("index.sqlite3*"):  # an index that cannot be read at once...
            file.write_bytes(os.urandom(max(file.stat().st_size, 4096)))
        assert not inner.surely_missing(entry.key)
        threads.clear()
        assert await cache.get("n" * 64) is None  # ...is asked in a worker thread, and rebuilt
        assert threads
        assert inner.surely_missing("n" * 64)  # the new one is read on the loop again
    finally:
        other.close()
        cache.close()


def test_the_index_commits_without_an_fsync_each(tmp_path: Path) -> None:
    """A hit is two commits on the speaker path's repeat: WAL with synchronous=NORMAL syncs
    only at checkpoints (an fsync per commit cost up to ~10 ms here, issue #16)."""
    db = open_index(tmp_path / "index.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.close()
