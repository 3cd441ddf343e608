"""Pronunciation dictionaries: words said otherwise than written ("GIF" → "jif").

An entry replaces whole words only (``cat`` does not touch ``concatenate``), case-insensitively;
where entries overlap the longest wins (``New York City`` before ``New York``). The global
dictionary (``pronunciations`` in the configuration) speaks for every source; a guild's own (the
Discord server's ``/dictionary``), looked up through :attr:`Pronunciations.guild_lookup`, wins
over it for the same word in requests of that guild. The rewritten text is what is synthesized
and what the audio cache is keyed by, so a changed entry is never served stale.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache

__all__ = ["MAX_ENTRY_CHARS", "GuildLookup", "Pronunciations", "pronounce"]

#: Longest word, or spoken form, of an entry (characters).
MAX_ENTRY_CHARS = 100

#: A guild id → that guild's entries (word → spoken as).
GuildLookup = Callable[[str], Awaitable[Mapping[str, str]]]


@lru_cache(maxsize=256)
def _compiled(entries: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    spoken = {word.casefold(): said for word, said in entries}
    words = sorted(spoken, key=len, reverse=True)  # the regex takes the first that matches
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE), spoken


def pronounce(text: str, entries: Mapping[str, str]) -> str:
    """``text`` with each whole word of ``entries`` (word → spoken as, any case) replaced."""
    if not entries:
        return text
    pattern, spoken = _compiled(tuple(sorted(entries.items())))
    return pattern.sub(lambda m: spoken[m.group(0).casefold()], text)


class Pronunciations:
    """The global dictionary plus, when a front end sets :attr:`guild_lookup`, each guild's."""

    def __init__(self, entries: Mapping[str, str]) -> None:
        self.entries = {word.casefold(): said for word, said in entries.items()}
        self.guild_lookup: GuildLookup | None = None

    async def apply(self, text: str, guild: str | None) -> str:
        """``text`` as it is to be said in ``guild`` (None: no guild, the global entries only)."""
        entries = self.entries
        if guild is not None and self.guild_lookup is not None:
            own = await self.guild_lookup(guild)
            if own:
                entries = {**entries, **{word.casefold(): said for word, said in own.items()}}
        return pronounce(text, entries)
