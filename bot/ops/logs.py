"""Logging: one line per event, the request id on every line, JSON on demand, secrets masked.

The request id travels in a context variable (:data:`REQUEST_ID`, bound by
:func:`bind_request`; tasks inherit it). ``log_format: json`` writes one object per line
(python-json-logger: ``time``, ``level``, ``logger``, ``message``, ``request_id``,
``exc_info``). Every secret Oyez knows (:func:`register_secret`,
:func:`register_settings_secrets`), and any piece of 8 or more characters from its start, becomes
``********`` in the final line, tracebacks included; :func:`mask_secrets` does the same for every
other text that leaves the process (API bodies, events, replies, CLI output).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "MASK",
    "REQUEST_ID",
    "bind_request",
    "mask_secrets",
    "register_secret",
    "register_settings_secrets",
    "setup_logging",
]

MASK = "********"
REQUEST_ID: ContextVar[str | None] = ContextVar("oyez_request_id", default=None)
#: Keys whose values are secrets wherever they appear (provider sections are plain mappings).
SECRET_KEYS = re.compile(
    r"(token|api_key|apikey|secret|password|access_key|private_key)$", re.IGNORECASE
)
#: Shorter values are not masked: they would mangle ordinary words.
MIN_SECRET_LENGTH = 6
#: A piece of a secret this long, from its start, is masked too (providers quote part of a key).
MIN_PREFIX_LENGTH = 8
_secrets: set[str] = set()
#: What the pattern finds: a whole short secret, or the first MIN_PREFIX_LENGTH characters of a
#: longer one (the match is then extended as far as the text goes on with that secret).
_pattern: re.Pattern[str] | None = None
_by_head: dict[str, list[str]] = {}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log line from now on."""
    global _pattern
    if value and len(value) >= MIN_SECRET_LENGTH and value not in _secrets:
        _secrets.add(value)
        _by_head.setdefault(value[:MIN_PREFIX_LENGTH], []).append(value)
        ordered = sorted(_by_head, key=len, reverse=True)  # longest first: no partial leaks
        _pattern = re.compile("|".join(re.escape(head) for head in ordered))


def register_settings_secrets(settings: BaseModel) -> None:
    """Register every ``SecretStr`` of ``settings``, every value under a secret-looking key
    (``token``, ``api_key``, ``password``…) of its plain mappings, the password of every URL
    that carries one (``redis://:password@host``), and the providers' key variables from the
    environment (``*_API_KEY``, ``*_TOKEN``)."""
    _walk(settings)
    for name, value in os.environ.items():
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")):
            register_secret(value)


def _walk(value: Any, key: str = "") -> None:
    if isinstance(value, SecretStr):
        register_secret(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), name)
    elif isinstance(value, dict):
        for name, item in value.items():
            _walk(item, str(name))
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, key)
    elif isinstance(value, str) and SECRET_KEYS.search(key):
        register_secret(value)
    elif isinstance(value, str) and "://" in value:
        with contextlib.suppress(ValueError):  # not a URL after all
            register_secret(urlsplit(value).password)


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret, and every piece of one of at least
    :data:`MIN_PREFIX_LENGTH` characters from its start, replaced by :data:`MASK`."""
    pattern = _pattern
    if pattern is None:
        return text
    parts: list[str] = []
    position = 0
    while (found := pattern.search(text, position)) is not None:
        start = found.start()
        end = max(start + _common_prefix(text, start, s) for s in _by_head[found.group()])
        parts += [text[position:start], MASK]
        position = end
    return "".join(parts) + text[position:]


def _common_prefix(text: str, start: int, secret: str) -> int:
    """How many characters of ``text`` from ``start`` are the start of ``secret``."""
    length = 0
    for have, want in zip(text[start : start + len(secret)], secret, strict=False):
        if have != want:
            break
        length += 1
    return length


@contextmanager
def bind_request(request_id: str | None) -> Iterator[None]:
    """Log lines written inside carry ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class _MaskingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _MaskingJson(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(
    level: str | int = "INFO", *, json_lines: bool = False, stream: TextIO | None = None
) -> logging.Handler:
    """Send all logging to ``stream`` (stderr), one line per event; returns the handler.

    Replaces handlers an earlier call installed, so calling it again (``--verbose`` after the
    configuration is read) changes the level or format in place.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_oyez", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._oyez = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    if json_lines:
        handler.setFormatter(
            _MaskingJson(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(_MaskingText(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py and aiohttp are chatty below INFO; Oyez's own DEBUG is what users want
    for noisy in ("discord", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    return handler
