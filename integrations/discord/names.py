"""How the bot says a member's name in "<name> said": their ``/nick``, else their display name
cleaned so it can be spoken (emoji, symbols and decorations dropped, ``_`` read as a space);
and when (:class:`SpeakerTurns`): only when the speaker changes, or after a pause."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable

import discord

from integrations.discord.preferences import Preferences

__all__ = ["MAX_NICK_CHARS", "SpeakerTurns", "clean_name", "spoken_name"]

#: Longest ``/nick``, characters (Discord's own nickname limit is 32).
MAX_NICK_CHARS = 32

# Letters, marks, numbers and spaces are said; of punctuation only what names use.
_KEPT_CATEGORIES = ("L", "M", "N", "Zs")
_KEPT_PUNCTUATION = frozenset("'-.’")


def _keep(char: str) -> bool:
    return unicodedata.category(char).startswith(_KEPT_CATEGORIES) or char in _KEPT_PUNCTUATION


def clean_name(name: str) -> str:
    """``name`` without emoji and symbols, ``_`` as spaces, whitespace collapsed; empty when
    nothing speakable is left ("🎉✨" → "")."""
    text = unicodedata.normalize("NFKC", name).replace("_", " ")
    kept = "".join(ch if _keep(ch) else " " for ch in text)
    return " ".join(kept.split()).strip("-.'’ ")


async def spoken_name(
    user: discord.User | discord.Member, guild_id: int | None, preferences: Preferences
) -> str:
    """``user``'s ``/nick`` in ``guild_id``, else their cleaned display name, else their cleaned
    user name, else "someone"."""
    if guild_id is not None:
        nick = await preferences.nick_of(guild_id, user.id)
        if nick:
            return nick
    return clean_name(user.display_name) or clean_name(user.name) or "someone"


class SpeakerTurns:
    """Who spoke last in each guild, and when: the name is said again only for another
    speaker, or after ``gap_s`` seconds (``/settings xsaid_gap_s``; 0: every time)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[int, tuple[int, float]] = {}  # guild id → (user id, when)

    def name_due(self, guild_id: int, user_id: int, gap_s: float) -> bool:
        """Whether ``user_id``'s message now needs "<name> said"; records it as the last."""
        now = self._clock()
        last = self._last.get(guild_id)
        self._last[guild_id] = (user_id, now)
        return last is None or last[0] != user_id or now - last[1] >= gap_s
