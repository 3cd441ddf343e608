"""What is not spoken though valid: announcements in quiet hours (only ``priority: high``
passes) and the same message to the same target within ``announce.duplicate_window_s``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from bot.announce.model import Announcement, Target
from bot.ops.config import Settings
from bot.speech import Priority

__all__ = ["Suppression"]


class Suppression:
    """Quiet hours and duplicates. ``clock`` is Unix seconds.

    Only what was spoken counts as a duplicate: an announcement that did not play to a target
    is :meth:`forget`-ten there, so the same message may go again.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        #: (message folded, target) → (Unix seconds, the request id that sent it)
        self._recent: dict[tuple[str, str], tuple[float, str]] = {}

    def reason(
        self, announcement: Announcement, targets: Iterable[Target], request_id: str
    ) -> tuple[str, str] | None:
        """(code, reason) when ``announcement`` is not to be spoken now, else None (and it is
        remembered as sent to ``targets`` by ``request_id``)."""
        now = self.clock()
        quiet = self.settings.announce.quiet_hours
        if quiet is not None and announcement.priority is not Priority.HIGH:
            local = datetime.fromtimestamp(now, self.settings.zone()).time()
            if quiet.contains(local):
                return "quiet_hours", (
                    f"quiet hours ({quiet.start:%H:%M}-{quiet.end:%H:%M}): only priority high "
                    "is spoken"
                )
        window = self.settings.announce.duplicate_window_s
        self._recent = {k: v for k, v in self._recent.items() if now - v[0] < window}
        text = " ".join(announcement.message.casefold().split())
        keys = [(text, str(t)) for t in targets]
        earlier = next((self._recent[k][1] for k in keys if k in self._recent), None)
        if window > 0 and earlier is not None:
            return "duplicate", (
                f"the same message went to the same target within {window:g} s (request {earlier})"
            )
        for key in keys:
            self._recent[key] = (now, request_id)
        return None

    def forget(self, request_id: str, targets: set[str] | None = None) -> None:
        """Let the message of ``request_id`` go again to ``targets`` (all: None)."""
        for key, (_, owner) in list(self._recent.items()):
            if owner == request_id and (targets is None or key[1] in targets):
                del self._recent[key]
