"""The audio cache: what was said once is not synthesized (or paid for) again.

Content-addressed: the key is the SHA-256 of all that shapes the audio (provider, model, voice,
normalised options and text, output profile, audio settings, engine version), so a changed
option or a new engine misses. Files live in ``<data_dir>/cache/`` beside an SQLite index
(``index.sqlite3``), kept under ``cache.max_mb`` by evicting the least recently used first. A
hit calls no provider, spends no credits or rate-limit budget, and plays the stored bytes once
their size and BLAKE2b checksum match the index (else the entry is dropped and it is a miss). An
index SQLite cannot open is moved aside (``index.sqlite3.corrupt-<unix time>``) and rebuilt.

:class:`HotCache` keeps the most recently used entries in memory too (``cache.memory_mb``): a hit
on one is answered on the event loop, without the index's worker thread or reading the file
(0.5-1.5 ms of a repeat's ~3 ms in Oyez on the speaker path), its use recorded in the index
just after.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.ops.metrics import CACHE_LOOKUPS
from bot.ops.store import Database, connect
from bot.speech import OutputProfile, Voice

__all__ = [
    "AudioCache",
    "Cache",
    "CacheEntry",
    "CacheStats",
    "HotCache",
    "cache_key",
    "checksum",
    "move_aside",
    "open_index",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    profile TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    loudness_lufs REAL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    voice_id TEXT NOT NULL,
    voice_name TEXT NOT NULL,
    language TEXT,
    created_at REAL NOT NULL,
    used_at REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    checksum TEXT
);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# an upsert, not INSERT OR REPLACE: the row a REPLACE deletes fires no delete trigger
_INSERT = (
    "INSERT INTO entries (key, file, bytes, profile, sample_rate, channels, duration_s, "
    "loudness_lufs, provider, model, voice_id, voice_name, language, created_at, used_at, "
    "checksum) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
    "file = excluded.file, bytes = excluded.bytes, profile = excluded.profile, "
    "sample_rate = excluded.sample_rate, channels = excluded.channels, "
    "duration_s = excluded.duration_s, loudness_lufs = excluded.loudness_lufs, "
    "provider = excluded.provider, model = excluded.model, voice_id = excluded.voice_id, "
    "voice_name = excluded.voice_name, language = excluded.language, "
    "created_at = excluded.created_at, used_at = excluded.used_at, "
    "checksum = excluded.checksum, hits = 0"
)
#: The running total of the entries' bytes (``counters`` row ``bytes``), kept by the index
#: itself: eviction reads it on every put, where a ``SUM`` over the index took 1.2 ms at 20,000
#: entries (a full 500 MiB cache of sentences), growing with it.
_BYTES_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS entries_bytes_added AFTER INSERT ON entries BEGIN "
    "INSERT INTO counters VALUES ('bytes', NEW.bytes) "
    "ON CONFLICT(name) DO UPDATE SET value = value + NEW.bytes; END",
    "CREATE TRIGGER IF NOT EXISTS entries_bytes_removed AFTER DELETE ON entries BEGIN "
    "UPDATE counters SET value = value - OLD.bytes WHERE name = 'bytes'; END",
    "CREATE TRIGGER IF NOT EXISTS entries_bytes_changed AFTER UPDATE OF bytes ON entries BEGIN "
    "UPDATE counters SET value = value - OLD.bytes + NEW.bytes WHERE name = 'bytes'; END",
)
#: Entries read at a time while evicting (the oldest first).
_EVICT_BATCH = 32
#: A cached audio file's name: its key and the profile's extension.
_AUDIO_FILE = re.compile(r"[0-9a-f]{64}\.[a-z0-9]+")


def checksum(audio: bytes) -> str:
    """The BLAKE2b (256-bit) hex digest the index keeps of an entry's bytes."""
    return hashlib.blake2b(audio, digest_size=32).hexdigest()


def open_index(path: Path) -> sqlite3.Connection:
    """The cache index at ``path``; a file that is not an SQLite database (or is corrupt) is
    moved aside (:func:`move_aside`) and a fresh index made."""
    try:
        db = connect(path, _SCHEMA)
    except sqlite3.OperationalError:
        raise  # locked, unreadable, no space: not the file's contents
    except sqlite3.DatabaseError as exc:
        move_aside(path, exc)
        db = connect(path, _SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    if "checksum" not in columns:  # an index from before checksums: its entries get size checks
        db.execute("ALTER TABLE entries ADD COLUMN checksum TEXT")
    # no fsync per commit (WAL keeps the index consistent; a power cut may lose the last
    # hits' counts or entries, whose files are checked on read anyway): a hit is two commits,
    # and each fsync cost up to ~10 ms on the speaker path's repeat (issue #16)
    db.execute("PRAGMA synchronous=NORMAL")
    _track_bytes(db)
    return db


def _track_bytes(db: sqlite3.Connection) -> None:
    """Give an index the triggers of its running total (:data:`_BYTES_TRIGGERS`), the total
    counted once from its entries, in one transaction: an index from before them, or one
    another process is opening too, ends up with the right total either way."""
    have = db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'entries_bytes_%'"
    ).fetchone()[0]
    if have == len(_BYTES_TRIGGERS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for trigger in _BYTES_TRIGGERS:
            db.execute(trigger)
        db.execute(
            "INSERT INTO counters VALUES ('bytes', (SELECT COALESCE(SUM(bytes), 0) FROM entries)) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value"
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def move_aside(path: Path, exc: Exception) -> None:
    """Rename the unreadable index ``path`` to ``<name>.corrupt-<unix time>`` (its journal files
    go), remove the audio files it described, and log both paths with ``exc``."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.replace(aside)
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    for audio in path.parent.iterdir():
        if _AUDIO_FILE.fullmatch(audio.name):
            audio.unlink(missing_ok=True)
    log.warning("cache: index %s is unreadable (%s): moved to %s, rebuilt", path, exc, aside)


def cache_key(
    *,
    voice: Voice,
    options: dict[str, Any],
    text: str,
    profile: OutputProfile,
    audio: dict[str, Any],
    engine: str,
) -> str:
    """The content address of an utterance (64 hex characters)."""
    material = {
        "provider": voice.provider,
        "model": voice.model,
        "voice": voice.id,
        "options": options,
        "text": text,
        "profile": profile.value,
        "audio": audio,
        "engine": engine,
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached utterance's audio and what describes it."""

    key: str
    audio: bytes
    profile: OutputProfile
    sample_rate: int
    channels: int
    duration_s: float
    loudness_lufs: float | None
    voice: Voice


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int


class Cache(Protocol):
    """The audio cache: files in ``directory`` (named by key, written to a temporary name and
    renamed) and an index of them with their use, kept under ``max_bytes`` (least recently
    used evicted first). :class:`AudioCache` (embedded: an SQLite index in ``directory``) and
    :class:`bot.synthesis.shared_cache.RedisAudioCache` (the index in the engine's server, for
    processes on several machines that mount one volume)."""

    directory: Path
    max_bytes: int

    async def contains(self, key: str) -> bool:
        """Whether ``key`` is cached (not counted as a lookup)."""

    async def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or None (a miss, counted). A file gone, or whose size or
        checksum is not the index's, is a miss too (the entry dropped, logged)."""

    async def touch(self, key: str) -> None:
        """Count a hit on ``key`` answered without :meth:`get` (from memory: :class:`HotCache`)
        and mark it used now, as :meth:`get` does; nothing for a key no longer indexed but the
        count."""

    async def put(self, entry: CacheEntry) -> None:
        """Store ``entry`` and evict to the cap (an entry larger than the cap is not kept)."""

    async def stats(self) -> CacheStats:
        """Entries, bytes, the cap, and the hits and misses counted."""

    async def clear(self) -> int:
        """Delete every entry (and the counts); returns how many there were."""

    def close(self) -> None:
        """Let go of what the cache holds open (the index); the files stay."""


def file_name(entry: CacheEntry) -> str:
    """The name of ``entry``'s audio file in the cache's folder: ``<key><extension>``."""
    return f"{entry.key}{entry.profile.extension}"


def store_file(directory: Path, entry: CacheEntry) -> str:
    """Write ``entry``'s audio as :func:`file_name` in ``directory`` (to a temporary name, then
    renamed, so a reader in any process sees all of it or none); the file's name."""
    name = file_name(entry)
    temporary = directory / f".{name}.partial"
    temporary.write_bytes(entry.audio)
    temporary.replace(directory / name)
    return name


def read_checked(path: Path, size: int, digest: str | None) -> bytes | None:
    """The bytes at ``path`` if they are ``size`` long with ``digest`` (:func:`checksum`; None:
    not checked); None when the file is gone or damaged (logged)."""
    try:
        audio = path.read_bytes()
    except OSError:
        return None
    if len(audio) == size and digest in (None, checksum(audio)):
        return audio
    log.warning(
        "cache: %s is damaged (%d bytes, index says %d, or its checksum differs):"
        " dropped, synthesizing again",
        path,
        len(audio),
        size,
    )
    return None


class AudioCache:
    """Files plus an SQLite index; safe to share between the CLI and a running bot, and
    between processes on one machine that share ``directory``.

    Every method touching the index or the files runs in a worker thread (see
    :class:`~bot.ops.store.Database`), so a busy index never stalls the event loop; but
    :meth:`surely_missing`, a read that never waits.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._index = directory / "index.sqlite3"
        self._db = Database(partial(open_index, self._index))
        self._reader: sqlite3.Connection | None = None  # surely_missing's, read-only

    def close(self) -> None:
        self._forget_reader()
        self._db.close()

    def surely_missing(self, key: str) -> bool:
        """Whether the index has no entry for ``key``, asked in the calling thread (the event
        loop's: ~0.02 ms, where a worker thread's round trip is ~0.3 ms of a fresh sentence's
        way to its first audio) on a read-only connection that never waits for a lock. False
        when it has one, or when that cannot be told at once (the index busy, not made yet,
        unreadable): :meth:`get` then looks, in a worker thread. An entry's file is not looked
        at: one in the index is never surely missing. The miss is not counted
        (:meth:`count_miss`)."""
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    f"{self._index.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=0,
                    isolation_level=None,
                    check_same_thread=False,
                )
            found = self._reader.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            self._forget_reader()
            return False
        return found is None

    def _forget_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    async def count_miss(self) -> None:
        """Count a miss that :meth:`surely_missing` answered."""
        await self._call(lambda db: self._count(db, "miss"))

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the index; an index found unreadable while in use (overwritten, corrupt)
        is moved aside and rebuilt, and ``work`` runs once more on the new one."""
        used = self._db
        try:
            return await used.call(work)
        except (sqlite3.OperationalError, sqlite3.ProgrammingError):
            if self._db is used:  # locked, or closed: not the index's contents
                raise
        except sqlite3.DatabaseError as exc:
            if self._db is used:  # not already rebuilt by a call that failed at the same time
                used.close()
                self._forget_reader()
                await asyncio.to_thread(move_aside, self._index, exc)
                self._db = Database(partial(open_index, self._index))
        return await self._db.call(work)

    @staticmethod
    def _count(db: sqlite3.Connection, name: str) -> None:
        db.execute(
            "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )
        CACHE_LOOKUPS.labels(name).inc()

    async def contains(self, key: str) -> bool:
        """Whether ``key`` is cached (not counted as a lookup); one surely missing is told
        at once, on the calling thread."""
        if self.surely_missing(key):
            return False
        row = await self._call(
            lambda db: db.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone()
        )
        return row is not None

    async def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or None (a miss). A file gone from disk, or whose size or
        checksum is not the index's, is a miss too (the entry dropped, logged)."""
        return await self._call(lambda db: self._get(db, key))

    async def touch(self, key: str) -> None:
        await self._call(lambda db: self._hit(db, key))

    def _hit(self, db: sqlite3.Connection, key: str) -> None:
        """Count a hit on ``key`` and mark it used now."""
        db.execute(
            "UPDATE entries SET used_at = ?, hits = hits + 1 WHERE key = ?", (time.time(), key)
        )
        self._count(db, "hit")

    def _get(self, db: sqlite3.Connection, key: str) -> CacheEntry | None:
        row = db.execute(
            "SELECT file, profile, sample_rate, channels, duration_s, loudness_lufs, "
            "provider, model, voice_id, voice_name, language, bytes, checksum "
            "FROM entries WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            self._count(db, "miss")
            return None
        path = self.directory / row[0]
        audio = read_checked(path, row[11], row[12])
        if audio is None:
            db.execute("DELETE FROM entries WHERE key = ?", (key,))
            path.unlink(missing_ok=True)
            self._count(db, "miss")
            return None
        self._hit(db, key)
        return CacheEntry(
            key,
            audio,
            OutputProfile(row[1]),
            row[2],
            row[3],
            row[4],
            row[5],
            Voice(row[6], row[7], row[8], row[9], row[10]),
        )

    async def put(self, entry: CacheEntry) -> None:
        """Store ``entry`` (written to a temporary name, then renamed) and evict to the cap."""
        if len(entry.audio) > self.max_bytes:
            return
        await self._call(lambda db: self._put(db, entry))

    def _put(self, db: sqlite3.Connection, entry: CacheEntry) -> None:
        name = store_file(self.directory, entry)
        now = time.time()
        v = entry.voice
        db.execute(
            _INSERT,
            (
                entry.key,
                name,
                len(entry.audio),
                entry.profile.value,
                entry.sample_rate,
                entry.channels,
                entry.duration_s,
                entry.loudness_lufs,
                v.provider,
                v.model,
                v.id,
                v.name,
                v.language,
                now,
                now,
                checksum(entry.audio),
            ),
        )
        self._evict(db)

    def _evict(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM counters WHERE name = 'bytes'").fetchone()
        total = row[0] if row else 0
        while total > self.max_bytes:
            oldest = db.execute(
                "SELECT key, file, bytes FROM entries ORDER BY used_at ASC LIMIT ?",
                (_EVICT_BATCH,),
            ).fetchall()
            if not oldest:
                return
            for key, file, size in oldest:
                db.execute("DELETE FROM entries WHERE key = ?", (key,))
                (self.directory / file).unlink(missing_ok=True)
                total -= size
                log.debug("cache: evicted %s (%d bytes)", key, size)
                if total <= self.max_bytes:
                    return

    async def stats(self) -> CacheStats:
        def read(db: sqlite3.Connection) -> CacheStats:
            entries, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM entries"
            ).fetchone()
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
            return CacheStats(
                entries, size, self.max_bytes, counters.get("hit", 0), counters.get("miss", 0)
            )

        return await self._call(read)

    async def clear(self) -> int:
        """Delete every entry; returns how many there were."""

        def empty(db: sqlite3.Connection) -> int:
            files = [row[0] for row in db.execute("SELECT file FROM entries").fetchall()]
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM counters")
            for file in files:
                (self.directory / file).unlink(missing_ok=True)
            return len(files)

        return await self._call(empty)


class HotCache:
    """A :class:`Cache` (``inner``) whose most recently used entries, up to ``memory_bytes`` of
    audio, are also kept in memory. A hit on one is answered at once on the event loop: a dict
    lookup and a ``stat`` of its file, so an entry evicted or cleared since (by any process
    sharing the folder), or whose file was cut short, is not answered but asked of ``inner``
    (a miss there, or the file checked as it is read). Its use is
    recorded in the index (:meth:`Cache.touch`) right after, off the caller's path. A key an
    :class:`AudioCache` index surely does not have is a miss at once too (counted right after).

    With ``put_behind`` (a cache no other process reads), :meth:`put` returns once the entry
    is in memory, and its file and index row are written right after, off the caller's path
    (~0.8 ms of a fresh sentence's way to its first audio); until then it is answered from
    memory, and a failed write costs the entry, never the request. :meth:`settle` waits for
    those records and writes (:meth:`stats` and :meth:`clear` do). Everything else is
    ``inner``'s; an entry larger than ``memory_bytes`` stays on disk only."""

    def __init__(self, inner: Cache, memory_bytes: int, *, put_behind: bool = False) -> None:
        self.inner = inner
        self.directory = inner.directory
        self.max_bytes = inner.max_bytes
        self.memory_bytes = memory_bytes
        self.put_behind = put_behind
        self._hot: OrderedDict[str, CacheEntry] = OrderedDict()
        self._held = 0  # bytes of audio in _hot
        self._pending: dict[str, CacheEntry] = {}  # put, not yet stored by inner
        self._early_hits: dict[str, int] = {}  # hits on those, recorded once they are stored
        self._background: set[asyncio.Task[None]] = set()  # touches and puts under way

    @property
    def held_bytes(self) -> int:
        """Bytes of audio held in memory now."""
        return self._held

    def _fresh(self, key: str) -> CacheEntry | None:
        """``key``'s entry from memory while its file is still in the folder (or is still being
        written), else None."""
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        entry = self._hot.get(key)
        if entry is None:
            return None
        try:
            size = (self.directory / file_name(entry)).stat().st_size
        except OSError:
            size = -1
        if size != len(entry.audio):  # gone (evicted, cleared) or cut short: read it again
            self._drop(key)
            return None
        self._hot.move_to_end(key)
        return entry

    def _keep(self, entry: CacheEntry) -> None:
        size = len(entry.audio)
        if size > self.memory_bytes:
            return
        self._drop(entry.key)
        self._hot[entry.key] = entry
        self._held += size
        while self._held > self.memory_bytes:
            self._drop(next(iter(self._hot)))

    def _drop(self, key: str) -> None:
        entry = self._hot.pop(key, None)
        if entry is not None:
            self._held -= len(entry.audio)

    async def contains(self, key: str) -> bool:
        return self._fresh(key) is not None or await self.inner.contains(key)

    async def get(self, key: str) -> CacheEntry | None:
        entry = self._fresh(key)
        if entry is not None:
            if key in self._pending:  # recorded once it is stored
                self._early_hits[key] = self._early_hits.get(key, 0) + 1
            else:
                self._behind(self._touch(key), "oyez-cache-touch")
            return entry
        inner = self.inner
        if isinstance(inner, AudioCache) and inner.surely_missing(key):
            self._behind(self._count_miss(inner), "oyez-cache-miss")
            return None
        entry = await inner.get(key)
        if entry is not None:
            self._keep(entry)
        return entry

    @staticmethod
    async def _count_miss(inner: AudioCache) -> None:
        try:
            await inner.count_miss()
        except Exception as exc:  # the miss was answered: only its count is lost
            log.warning("cache: a miss was not counted: %s", exc)

    async def _touch(self, key: str) -> None:
        try:
            await self.inner.touch(key)
        except Exception as exc:  # the hit was answered: only its count and age are lost
            log.warning("cache: the use of %s was not recorded: %s", key, exc)

    async def touch(self, key: str) -> None:
        await self.inner.touch(key)

    async def put(self, entry: CacheEntry) -> None:
        if len(entry.audio) > self.max_bytes:  # what inner does not keep
            return
        if not self.put_behind:
            await self.inner.put(entry)
            self._keep(entry)
            return
        self._pending[entry.key] = entry
        self._keep(entry)
        self._behind(self._put(entry), "oyez-cache-put")

    async def _put(self, entry: CacheEntry) -> None:
        try:
            await self.inner.put(entry)
        except Exception as exc:  # the audio was handed on: only its cache entry is lost
            log.warning("cache: %s was not stored: %s", entry.key, exc)
            self._drop(entry.key)
            self._early_hits.pop(entry.key, None)
            return
        finally:
            if self._pending.get(entry.key) is entry:
                del self._pending[entry.key]
        for _ in range(self._early_hits.pop(entry.key, 0)):
            await self._touch(entry.key)

    def _behind(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait until every hit answered from memory so far is recorded in the index, and
        every entry put is stored."""
        while self._background:
            await asyncio.gather(*self._background)

    async def stats(self) -> CacheStats:
        await self.settle()
        return await self.inner.stats()

    async def clear(self) -> int:
        await self.settle()
        self._hot.clear()
        self._held = 0
        return await self.inner.clear()

    def close(self) -> None:
        self.inner.close()
