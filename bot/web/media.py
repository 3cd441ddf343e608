"""Media URLs that every Oyez process sharing the data folder serves (``engine.url`` set).

:class:`~bot.web.server.MediaStore` keeps each URL's expiry in its own memory, so only the
process that published a file serves it, and it clears the folder at start. With several
processes on one volume a speaker's media URL must work whichever process answers, and a
process starting must not delete the others' files. :class:`SharedMediaStore` puts the expiry
in the name itself, ``<128 random bits>-<expiry, Unix seconds in hex>.<ext>``: any process can
tell a name's validity from the name and the file, without asking another. The expiry cannot be
moved by editing a URL: a name with another expiry names no file.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from bot.speech import OutputProfile
from bot.web.server import GrowingMedia, MediaStore

__all__ = ["SharedMediaStore"]

_TOKEN_BYTES = 16  # 128 bits
_EXTENSIONS = {p.extension.removeprefix(".") for p in OutputProfile}
#: Seconds after which a ``.part`` file (its writer died mid-write) is swept.
PART_KEPT_S = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9_-]{22}-(?P<expiry>[0-9a-f]{1,12})\.(?P<ext>[a-z0-9]{1,5})$")


class SharedMediaStore(MediaStore):
    """Audio files in ``directory`` (on a volume every process mounts), served until the
    expiry in their name. ``clock`` is Unix seconds (every process's clock agrees, roughly).
    Files are written at once: any process may be asked for one as soon as its URL is out."""

    write_behind = False

    def __init__(
        self,
        directory: Path,
        base_url: str,
        ttl_s: float = 600.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # not MediaStore.__init__: the files already there are other processes' live media
        self.directory = directory
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.clock = clock
        self._expiry = {}
        self._growing = {}
        self._kept = OrderedDict()
        self._memory_only = set()
        self._writes = {}
        directory.mkdir(parents=True, exist_ok=True)

    def _shared_name(self, extension: str, ttl_s: float | None) -> str:
        if extension not in _EXTENSIONS:
            raise ValueError(f"unsupported media extension {extension!r}")
        expiry = int(self.clock() + (ttl_s if ttl_s is not None else self.ttl_s)) + 1
        return f"{secrets.token_urlsafe(_TOKEN_BYTES)}-{expiry:x}.{extension}"

    def publish(self, audio: bytes, extension: str, ttl_s: float | None = None) -> str:
        name = self._shared_name(extension, ttl_s)
        self._write(name, audio)
        return f"{self.base_url}/media/{name}"

    def publish_growing(
        self, extension: str, ttl_s: float | None = None
    ) -> tuple[str, GrowingMedia]:
        """As :meth:`MediaStore.publish_growing`; while it grows only this process streams it
        (another answers 404 until it is whole, then serves the file)."""
        name = self._shared_name(extension, ttl_s)

        def finished(audio: bytes) -> None:  # nothing made: nothing to serve (404)
            if self._growing.pop(name, None) is not None and audio:
                self._write(name, audio)

        media = GrowingMedia(finished)
        self._growing[name] = media
        return f"{self.base_url}/media/{name}", media

    def path(self, name: str) -> Path | None:
        expiry = _expiry(name)
        if expiry is None:
            return None
        if self.clock() >= expiry:
            (self.directory / name).unlink(missing_ok=True)
            return None
        return self.directory / name

    def sweep(self) -> int:
        """Remove expired files (any process's); returns how many."""
        now = self.clock()
        removed = 0
        for path in self.directory.iterdir():
            expiry = _expiry(path.name)
            if expiry is None and path.suffix == ".part":
                expiry = _modified(path) + PART_KEPT_S
            if expiry is not None and now >= expiry:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _expiry(name: str) -> float | None:
    """The expiry (Unix seconds) a valid media name carries; None for any other name."""
    found = _NAME.match(name)
    if found is None or found["ext"] not in _EXTENSIONS:
        return None
    return float(int(found["expiry"], 16))


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # another process swept it
        return float("inf")
