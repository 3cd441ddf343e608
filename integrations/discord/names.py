"""How the bot says a member's name in "<name> said": their ``/nick``, else their display name
cleaned so it can be spoken (emoji, symbols and decorations dropped, ``_`` read as a space)."""

from __future__ import annotations

import unicodedata

import discord

from integrations.discord.preferences import Preferences

__all__ = ["MAX_NICK_CHARS", "clean_name", "spoken_name"]

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
