"""Text normalisation before synthesis.

Every provider receives text that has been through :func:`normalize_text`: Unicode NFC, control
and format characters removed (they make some engines read garbage or fail), whitespace collapsed
to single spaces, and the length checked against the configured limit. Sound tags such as
``<sigh>`` or ``[laugh]`` are ordinary characters here and pass through untouched.
"""

from __future__ import annotations

import re
import unicodedata

from bot.errors import EmptyText, TextTooLong

__all__ = ["normalize_text"]

_WHITESPACE = re.compile(r"\s+")


def _keep(char: str) -> bool:
    # Cc: control characters (NUL, BEL, ESC…); Cf: format characters (zero-width spaces, bidi
    # overrides) that are invisible to the reader but not to a phonemizer. Whitespace controls
    # (tab, newline) are kept here and collapsed below.
    return char.isspace() or unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Co", "Cn"}


def normalize_text(text: str, max_length: int) -> str:
    """Return ``text`` cleaned for speech.

    Raises :class:`EmptyText` if nothing speakable remains, :class:`TextTooLong` if the cleaned
    text has more than ``max_length`` characters.
    """
    cleaned = "".join(ch for ch in unicodedata.normalize("NFC", text) if _keep(ch))
    cleaned = _WHITESPACE.sub(" ", cleaned).strip()
    if not cleaned:
        raise EmptyText()
    if len(cleaned) > max_length:
        raise TextTooLong(len(cleaned), max_length)
    return cleaned
