"""The one fake wall clock of the tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime

# 2025-01-15 12:00:00 UTC, a Wednesday: where the announcement tests' clocks start
NOON = datetime(2025, 1, 15, 12, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """A wall clock (epoch seconds) that only moves when told: ``clock.advance(3601)``.

    ``clock.now`` may also be set directly; calling the clock returns it.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
