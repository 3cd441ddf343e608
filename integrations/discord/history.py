"""What was said in each server lately, for ``/history``: :class:`SpokenHistory`.

Every item a guild's player finishes (a ``/say``, a message read aloud, an announcement, a
scheduled alert) is kept, newest first, up to :data:`HISTORY_SIZE` per server, in this
process's memory (a guild's voice is in one gateway process): what people ask for when a
sentence went by too fast, or to see who made the bot say something.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.ops.logs import mask_secrets
from bot.speech import Utterance
from integrations.discord.commands.errors import fit
from integrations.discord.player import QueuedItem

__all__ = ["HISTORY_SIZE", "Spoken", "SpokenHistory"]

#: Items kept per server.
HISTORY_SIZE = 20
#: Characters of each text ``/history`` shows.
TEXT_CHARS = 100
#: Characters of the items in one ``/history`` reply (Discord's message holds 2,000).
LISTING_CHARS = 1900


@dataclass(frozen=True, slots=True)
class Spoken:
    """One finished item: ``at`` (UTC), its ``text``, who asked (``label``), the voice that
    said it (None when it was not said) and, when it was not, why (``error``)."""

    at: datetime
    text: str
    label: str
    voice: str | None
    error: str | None

    def line(self) -> str:
        """``<t:…:R> text — who · voice`` (Discord's relative time markup), or ``⚠️ not said``."""
        when = f"<t:{int(self.at.timestamp())}:R>"
        text = self.text if len(self.text) <= TEXT_CHARS else self.text[: TEXT_CHARS - 1] + "…"
        said = f"· {self.voice}" if self.error is None else f"· ⚠️ not said: {self.error}"
        return f"{when} {text} — {self.label or 'someone'} {said}"


class SpokenHistory:
    """The last :data:`HISTORY_SIZE` items finished in each server."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self.size = size
        self._guilds: dict[int, deque[Spoken]] = {}

    def record(
        self,
        guild_id: int,
        item: QueuedItem,
        utterance: Utterance | None,
        error: BaseException | None,
    ) -> None:
        """Keep ``item``'s outcome (as the player reports it)."""
        said = utterance is not None and error is None
        spoken = Spoken(
            at=datetime.now(UTC),
            text=item.request.text,
            label=item.label,
            voice=utterance.voice.label if said and utterance is not None else None,
            error=None if said else mask_secrets(str(error or "no audio")),
        )
        self._guilds.setdefault(guild_id, deque(maxlen=self.size)).appendleft(spoken)

    def recent(self, guild_id: int) -> list[Spoken]:
        """Newest first."""
        return list(self._guilds.get(guild_id, ()))

    def listing(self, guild_id: int) -> str:
        """``/history``'s reply: as many of the newest items as fit in one message."""
        items = self.recent(guild_id)
        if not items:
            return "Nothing has been said in this server since Oyez started."
        lines: list[str] = []
        used = 0
        for item in items:
            line = item.line()
            if used + len(line) > LISTING_CHARS:
                break
            lines.append(line)
            used += len(line) + 1
        return fit("\n".join([f"The last {len(lines)} said here, newest first:", *lines]))
