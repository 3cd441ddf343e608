"""The fake secrets the test suite uses, and a log handler that catches any of them.

``tests/conftest.py`` installs :class:`SecretScanner` on the root logger for the whole session
(at DEBUG, so every record of every module is seen, raw, before any masking) and fails the run
when a record contains one of :data:`FAKE_SECRETS` or a secret a fixture registered with
:func:`register`. Oyez must never log a key or a token, not even masked by luck.
"""

from __future__ import annotations

import logging

from tests.fakes.discord.client import FAKE_TOKEN
from tests.fakes.google import DEFAULT_API_KEY as GOOGLE_KEY
from tests.fakes.polly import DEFAULT_SECRET_ACCESS_KEY as POLLY_SECRET
from tests.fakes.segmind import DEFAULT_API_KEY as SEGMIND_KEY
from tests.fakes.together import DEFAULT_API_KEY as TOGETHER_KEY

__all__ = ["FAKE_SECRETS", "SecretScanner", "register"]

FAKE_SECRETS: set[str] = {
    SEGMIND_KEY,
    TOGETHER_KEY,
    GOOGLE_KEY,
    POLLY_SECRET,
    FAKE_TOKEN,
    "sk-env-key",
    "local-key",
    "t0ken-abc",
}


def register(secret: str) -> None:
    """Also watch for ``secret`` (a token made at run time, e.g. Home Assistant's)."""
    FAKE_SECRETS.add(secret)


class SecretScanner(logging.Handler):
    """Records every log record that carries a watched secret (message, arguments, traceback)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg} {record.args}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        for secret in FAKE_SECRETS:
            if secret in text:
                where = f"{record.name} ({record.pathname}:{record.lineno})"
                self.leaks.append(f"{where}: {text.replace(secret, '<SECRET>')[:300]}")
