"""Names of the files Oyez makes from a Piper model (its optimized copy, its halves), and their
pruning: standard library only, shared by :mod:`.engine` and :mod:`.vocoder`.

Everything made from one model starts with ``<model>-<hash of its path>-``; beside it, a record
``<model>-<hash of its path>.source`` holds the model's path. A model moved or deleted (a voice
package upgraded, a virtual environment made again: each is a new path) leaves its files behind,
~70 MB a voice; :func:`prune` removes them once their model is gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

__all__ = [
    "PARTIAL_UNUSED_S",
    "UNUSED_S",
    "made_from",
    "prune",
    "read_again",
    "used",
    "versioned_name",
    "written",
]

log = logging.getLogger(__name__)

#: Seconds a file made from a model may go unused before :func:`prune` removes it, when no
#: record says which model it was made from (files made before the records were kept).
UNUSED_S = 30 * 24 * 3600.0
#: Seconds after which a half-written file (its writer died) is removed.
PARTIAL_UNUSED_S = 24 * 3600.0
_RECORD = ".source"


def _base(model_path: Path) -> str:
    """``<model>-<hash of its resolved path>``: what everything made from it starts with."""
    resolved = model_path.resolve()
    where = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return f"{model_path.name.removesuffix('.onnx')}-{where}"


def versioned_name(model_path: Path, tag: str, version: str) -> tuple[str, str]:
    """(a name for what is made from ``model_path``, the prefix every version of it shares):
    ``<model>-<hash of its path>-<tag><hash of its size, modification time and version>``, so
    a changed model or a new ``version`` of what makes it never reads a stale file."""
    stat = model_path.resolve().stat()
    what = f"{stat.st_size}/{stat.st_mtime_ns}/{version}"
    prefix = f"{_base(model_path)}-{tag}"
    return f"{prefix}{hashlib.sha256(what.encode()).hexdigest()[:16]}", prefix


def made_from(cache_dir: Path, model_path: Path) -> None:
    """Record in ``cache_dir`` that the files named after ``model_path`` are made from it (so
    :func:`prune` can tell once it is gone). A record that cannot be written is logged: the
    files are then pruned as unrecorded ones, once unused for :data:`UNUSED_S`."""
    record = cache_dir / f"{_base(model_path)}{_RECORD}"
    source = str(model_path.resolve())
    try:
        if not record.is_file() or record.read_text(encoding="utf-8") != source:
            record.write_text(source, encoding="utf-8")
    except OSError as exc:
        log.debug("no record of %s's source in %s: %s", model_path, cache_dir, exc)


def used(path: Path) -> None:
    """Mark ``path`` (a file made from a model) as used now: its modification time, what
    :func:`prune` reads for files with no record."""
    try:
        os.utime(path)
    except OSError as exc:
        log.debug("cannot mark %s as used: %s", path, exc)


def read_again(cache_dir: Path, model_path: Path, *made: Path) -> None:
    """``made`` (files made from ``model_path`` before) are read again: the model recorded,
    and each marked as used."""
    made_from(cache_dir, model_path)
    for path in made:
        used(path)


def written(cache_dir: Path, model_path: Path) -> None:
    """Files were just made from ``model_path``: the model recorded, and what was made from
    models that are gone removed (a new file may mean a new path for a model)."""
    made_from(cache_dir, model_path)
    prune(cache_dir)


def prune(cache_dir: Path, *, now: float | None = None) -> list[Path]:
    """Remove from ``cache_dir`` what was made from models that are gone: every file named after
    a model whose record's path no longer exists, and the record; files with no record that
    went unused (modification time) for :data:`UNUSED_S`; half-written ones (``.partial``)
    older than :data:`PARTIAL_UNUSED_S`. Files of a model that exists stay, however old.
    Returns what was removed; what cannot be read or removed is left, and logged."""
    now = time.time() if now is None else now
    try:
        entries = {entry.name: entry for entry in os.scandir(cache_dir) if entry.is_file()}
    except OSError as exc:
        log.debug("cannot prune %s: %s", cache_dir, exc)
        return []
    kept: list[str] = []  # bases whose model exists
    gone: list[str] = []
    for name in entries:
        if not name.endswith(_RECORD):
            continue
        try:
            source = (cache_dir / name).read_text(encoding="utf-8")
        except OSError:
            continue
        (kept if Path(source).exists() else gone).append(name.removesuffix(_RECORD))
    removed: list[Path] = []
    freed = 0  # bytes
    for name, entry in entries.items():
        partial = name.endswith(".partial")
        try:
            stat = entry.stat()
        except OSError:
            continue
        # made from a model that is gone (a half's own copies too: they start with its name)
        orphan = name.removesuffix(_RECORD) in gone or any(name.startswith(f"{b}-") for b in gone)
        if not orphan:
            owned = name.endswith(_RECORD) or any(name.startswith(f"{b}-") for b in kept)
            if owned and not partial:
                continue  # its model is there
            if now - stat.st_mtime <= (PARTIAL_UNUSED_S if partial else UNUSED_S):
                continue
        path = cache_dir / name
        try:
            path.unlink()
        except OSError as exc:
            log.debug("cannot remove %s: %s", path, exc)
            continue
        removed.append(path)
        freed += stat.st_size
    if removed:
        log.info(
            "removed %d file(s), %.0f MB, made from Piper voices no longer there or unused from %s",
            len(removed),
            freed / 1e6,
            cache_dir,
        )
    return removed
