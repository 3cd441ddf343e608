"""The schedule store in Oyez's state file: a locked file never stalls the event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bot.ops.store import state_path
from bot.schedules.model import Schedule
from bot.schedules.store import ScheduleBook
from tests.support.sqlite import HOLD_S, ticks_during, write_locked


async def test_a_locked_state_file_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    first = ScheduleBook(tmp_path)
    assert await first.revision() == 0  # the file exists, its tables made
    first.close()
    schedule = Schedule.parse(
        {"name": "tea", "cron": "0 17 * * *", "message": "Tea.", "discord": "1/2"}
    )
    with write_locked(state_path(tmp_path)):  # e.g. `oyez schedule add` in another process
        book = ScheduleBook(tmp_path)  # opened, as Discord's commands do, while it is locked
        _, waited_s, ticks = await ticks_during(book.add(schedule, "cli", datetime.now(UTC)))
    try:
        assert waited_s >= HOLD_S * 0.8  # the write waited for the other connection's lock...
        assert ticks >= 10  # ...while the event loop went on running other tasks
        assert [s.name for s in await book.all()] == ["tea"]
        assert await book.revision() == 1
    finally:
        book.close()
