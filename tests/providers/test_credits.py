"""The ledger in Oyez's state file: its statements wait for a lock off the event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.ops.store import state_path
from bot.providers.books import Spend
from bot.providers.credits import Ledger
from tests.support.sqlite import HOLD_S, ticks_during, write_locked


async def test_a_locked_state_file_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, now=lambda: datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    try:
        assert await ledger.spent_today() == 0  # opens the file (its tables made)
        with write_locked(state_path(tmp_path)):
            spend = ledger.record_spend(Spend("segmind", "chatterbox", 0.02, "r1", False))
            _, waited_s, ticks = await ticks_during(spend)
        assert waited_s >= HOLD_S * 0.8  # the write waited for the other connection's lock...
        assert ticks >= 10  # ...while the event loop went on running other tasks
        assert await ledger.spent_today(provider="segmind") == pytest.approx(0.02)
    finally:
        ledger.close()
