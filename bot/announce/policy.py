"""What is not spoken though valid: announcements in quiet hours (only ``priority: high``
passes) and the same message to the same target within ``announce.duplicate_window_s``."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime

from bot.announce.model import Announcement, Target
from bot.announce.shared import KEPT, DuplicateWindow, LocalDuplicateWindow
from bot.ops.config import Settings
from bot.speech import Priority

__all__ = ["Suppression"]

log = logging.getLogger(__name__)


class Suppression:
    """Quiet hours and duplicates. ``clock`` is Unix seconds; ``window`` keeps who sent what
    (default: in this process; :class:`~bot.announce.shared.RedisDuplicateWindow` shares it
    with other processes).

    Only what was spoken counts as a duplicate: an announcement that did not play to a target
    is :meth:`forget`-ten there, so the same message may go again.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float],
        window: DuplicateWindow | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.window: DuplicateWindow = window or LocalDuplicateWindow(clock)
        #: request id → {target: its window key}, to forget (the last KEPT requests)
        self._sent: OrderedDict[str, dict[str, str]] = OrderedDict()

    async def reason(
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
        if window <= 0:
            return None
        text = " ".join(announcement.message.casefold().split())
        keys = {str(t): f"{text}\n{t}" for t in targets}
        try:
            earlier = await self.window.claim(list(keys.values()), request_id, window)
        except Exception as exc:  # a shared window that cannot be reached: spoken, maybe twice
            log.warning("request %s: the duplicate window cannot be read: %s", request_id, exc)
            return None
        if earlier is not None:
            return "duplicate", (
                f"the same message went to the same target within {window:g} s (request {earlier})"
            )
        self._sent[request_id] = keys
        while len(self._sent) > KEPT:
            self._sent.popitem(last=False)
        return None

    async def forget(self, request_id: str, targets: set[str] | None = None) -> None:
        """Let the message of ``request_id`` go again to ``targets`` (all: None)."""
        keys = self._sent.get(request_id, {})
        chosen = [key for target, key in keys.items() if targets is None or target in targets]
        for target in [t for t in keys if targets is None or t in targets]:
            del keys[target]
        try:
            await self.window.forget(chosen, request_id)
        except Exception as exc:  # it stays a duplicate until the window passes
            log.warning("request %s: the duplicate window cannot be written: %s", request_id, exc)
