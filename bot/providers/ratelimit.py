"""Rate limits: the providers' signals, and the client-side limiter every paid call goes through.

:func:`retry_after_s` reads the wait a 429 (or 503) asks for from the first header found of
``retry-after-ms`` (Together's SDK honours it first), ``Retry-After`` (seconds or an HTTP date,
RFC 9110 §10.2.3), ``x-rate-limit-reset-at-utc`` (the reset instant, per Segmind's API notes) and
``x-ratelimit-reset`` (time to the reset, Together/OpenAI style: ``1.5``, ``1m30s``, ``250ms``, or
Unix seconds when that large). Waits are never negative and are capped at ``cap_s``, so a wrong
clock cannot stall a queue for a day.

Over 450 lines: the limiter's windows, pauses, learned limit and follow-up requests share one
state, so they stay in one class.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "LimiterState",
    "RateLimiter",
    "WaitExpired",
    "jittered_backoff_s",
    "parse_duration_s",
    "remaining_calls",
    "retry_after_s",
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
# Windows over which the calls that went through are remembered: a 429 teaches no lower limit
# than went through in one window of these (a plan that really shrank shows within minutes).
_PROVEN_WINDOWS = 10
# Numbers this large are Unix timestamps, not durations (2001-09-09 onwards).
_EPOCH_THRESHOLD = 1_000_000_000


def jittered_backoff_s(attempt: int, base_s: float, cap_s: float, *, jitter: float = 1.0) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, …): the step ``base_s * 2**attempt``
    capped at ``cap_s``, drawn uniformly between ``(1 - jitter) * step`` and the step: 1.0 is
    "full jitter", 0.5 "equal jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"),
    so clients that failed together do not come back together."""
    step = min(cap_s, base_s * 2 ** min(attempt, 32))
    return random.uniform(step * (1 - jitter), step)


def parse_duration_s(value: str) -> float | None:
    """``"1.5"``, ``"250ms"``, ``"1m30s"``, ``"2h"`` → seconds; None when unreadable."""
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _instant(value: str) -> datetime | None:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return datetime.fromtimestamp(number, UTC) if number >= _EPOCH_THRESHOLD else None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def retry_after_s(
    headers: Mapping[str, str], now: datetime | None = None, cap_s: float = 3600.0
) -> float | None:
    """Seconds to wait before retrying, from the first header that can be read; None if none."""
    now = now or datetime.now(UTC)
    wait: float | None = None
    if (ms := _get(headers, "retry-after-ms")) is not None:
        try:
            wait = float(ms) / 1000
        except ValueError:
            wait = None
    if wait is None and (value := _get(headers, "retry-after")) is not None:
        wait = parse_duration_s(value)
        if wait is None and (at := _instant(value)) is not None:
            wait = (at - now).total_seconds()
    reset_at = _get(headers, "x-rate-limit-reset-at-utc")
    if wait is None and reset_at is not None and (at := _instant(reset_at)) is not None:
        wait = (at - now).total_seconds()
    if wait is None and (value := _get(headers, "x-ratelimit-reset")) is not None:
        number = parse_duration_s(value)
        if number is not None and number >= _EPOCH_THRESHOLD:
            wait = number - now.timestamp()
        else:
            wait = number
    if wait is None:
        return None
    return min(max(wait, 0.0), cap_s)


def remaining_calls(
    headers: Mapping[str, str], now: datetime | None = None
) -> tuple[int | None, float | None]:
    """Headroom a successful response reports: calls left in the provider's window
    (``x-ratelimit-remaining`` / ``x-rate-limit-remaining``) and seconds until it resets (the
    reset headers read by :func:`retry_after_s`). Either may be None."""
    raw = _get(headers, "x-ratelimit-remaining") or _get(headers, "x-rate-limit-remaining")
    try:
        remaining = int(float(raw)) if raw is not None else None
    except ValueError:
        remaining = None
    reset_headers = {
        k: v
        for k, v in headers.items()
        if k.lower() in ("x-rate-limit-reset-at-utc", "x-ratelimit-reset")
    }
    return remaining, retry_after_s(reset_headers, now)


class WaitExpired(Exception):
    """A request gave up waiting for a rate limiter; ``waited_s`` says how long it waited."""

    def __init__(self, limiter: str, waited_s: float) -> None:
        self.limiter = limiter
        self.waited_s = waited_s
        super().__init__(f"gave up after waiting {waited_s:.0f} s for {limiter}'s rate limit")


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    future: asyncio.Future[float] = field(compare=False)
    #: False for a follow-up request (:meth:`RateLimiter.count`): no concurrency slot.
    slot: bool = field(default=True, compare=False)


# Follow-up requests go before every call: they belong to calls already under way.
_FOLLOW_UP_RANK = -(2**31)


@dataclass(frozen=True, slots=True)
class LimiterState:
    """What :meth:`RateLimiter.state` reports (seconds are from now)."""

    name: str
    requests_per_minute: float | None
    learned_limit: int | None
    max_concurrent: int | None
    in_flight: int
    waiting: int
    started_last_minute: int
    paused_for_s: float
    consecutive_429s: int


class RateLimiter:
    """One provider's (or one model's) client-side rate limit: a bucket every call goes through.

    At most ``requests_per_minute`` calls start per ``window_s`` and ``max_concurrent`` run at
    once. The window slides until a call has gone through, then follows the provider's fixed
    windows (phased by that call, corrected by a 429's reset), clear of a ``guard`` at each edge;
    a 429's reset hint may teach a lower limit, never below what went through in one of the
    provider's last ten windows, and windows without a 429 probe it upward again (by 1, 2,
    4, … while probes pass; after a probe met a 429, after twice as many quiet windows) until
    it reaches the configured limit. :meth:`pause` stops the whole bucket after a 429
    (for the hint, else a full-jitter backoff). Waiters go by priority, then arrival; a retried
    request keeps its place. Time is the event loop's clock, so tests can fast-forward it.
    """

    def __init__(
        self,
        name: str,
        *,
        requests_per_minute: float | None = None,
        max_concurrent: int | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        window_s: float = 60.0,
    ) -> None:
        self.name = name
        self.requests_per_minute = requests_per_minute
        self.max_concurrent = max_concurrent
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.window_s = window_s
        self._starts: deque[float] = deque()
        self._waiters: list[_Waiter] = []
        self._in_flight = 0
        self._paused_until = 0.0
        self._consecutive_429s = 0
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        #: A lower limit per window learned from the provider's 429s (see :meth:`pause`).
        self.learned_limit: int | None = None
        # When the last 429's pause ends (windows from then on may prove quiet), and the last
        # upward probe of the learned limit (loop times).
        self._quiet_since = -math.inf
        self._probed_at = -math.inf
        # The next probe's step (doubles while probes pass) and the quiet windows it waits
        # for (doubles after a probe met a 429); whether the limit was probed since the 429.
        self._probe_step = 1
        self._probe_every = 1
        self._probed = False
        # Grant instants of the calls that went through, kept _PROVEN_WINDOWS windows.
        self._succeeded: deque[float] = deque()
        # An instant at which the provider's window resets: first estimated from the first
        # call that went through, then told by a 429. Windows are then the provider's fixed
        # ones, so waits do not drift the way a sliding window's do.
        self._phase: float | None = None
        self._phase_from_hint = False
        # Calls the provider said it still accepts before an instant: (until, calls).
        self._quota: tuple[float, int] | None = None
        # No call is granted this close to the provider's window boundary: one granted just
        # before it might be counted after it (one-way latency).
        self._guard = min(0.05 * window_s, 1.0)

    @property
    def limit(self) -> float | None:
        """Calls allowed to start per ``window_s``: the configured or the learned limit."""
        if self.learned_limit is None:
            return self.requests_per_minute
        if self.requests_per_minute is None:
            return self.learned_limit
        return min(self.requests_per_minute, self.learned_limit)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def ticket(self) -> int:
        """A place in the queue; keep it to retry without losing the place."""
        return next(self._seq)

    async def acquire(
        self, *, ticket: int | None = None, priority: int = 0, timeout_s: float | None = None
    ) -> float:
        """Wait for a turn; return the instant it was granted (loop time), which identifies the
        call to :meth:`pause` should the provider refuse it.

        Raises :class:`WaitExpired` after ``timeout_s`` seconds of waiting. Every successful
        ``acquire`` must be followed by one :meth:`release`.
        """
        waiter = _Waiter(
            -priority,
            self.ticket() if ticket is None else ticket,
            asyncio.get_running_loop().create_future(),
        )
        return await self._wait(waiter, timeout_s)

    async def count(self, *, timeout_s: float | None = None) -> float:
        """Wait until one more request of a call under way (a job's status poll) may start
        within the window; return its start instant. It counts in the window, takes no
        concurrency slot (nothing to :meth:`release`) and goes before every waiting call.

        Raises :class:`WaitExpired` after ``timeout_s`` seconds of waiting.
        """
        future = asyncio.get_running_loop().create_future()
        return await self._wait(_Waiter(_FOLLOW_UP_RANK, self.ticket(), future, False), timeout_s)

    async def _wait(self, waiter: _Waiter, timeout_s: float | None) -> float:
        started = self._now()
        heapq.heappush(self._waiters, waiter)
        self._dispatch()
        try:
            if timeout_s is None:
                return await waiter.future
            return await asyncio.wait_for(asyncio.shield(waiter.future), max(timeout_s, 0.0))
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                if waiter.slot:
                    self.release()  # granted just as we gave up: hand the turn back
            else:
                waiter.future.cancel()
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
            self._dispatch()
            if isinstance(exc, TimeoutError):
                raise WaitExpired(self.name, self._now() - started) from None
            raise

    def release(self) -> None:
        self._in_flight = max(self._in_flight - 1, 0)
        self._dispatch()

    def pause(self, retry_after_s: float | None, refused: float | None = None) -> float:
        """Stop the bucket after a 429: for ``retry_after_s``, else for a backoff. Returns it.

        ``refused`` is the grant instant of the refused call: the provider did not count it, so
        neither does the window. A hint also tells the provider's window: it resets then. From
        that moment the bucket counts calls in the provider's own fixed windows, and the calls
        that went through in the window that just filled up are the provider's real limit,
        adopted when lower than the configured one (a plan smaller than configured).
        """
        self._consecutive_429s += 1
        now = self._now()
        if refused is not None:
            with contextlib.suppress(ValueError):
                self._starts.remove(refused)
        if retry_after_s is None:
            retry_after_s = self.backoff_s(self._consecutive_429s - 1)
        else:
            reset = now + retry_after_s
            self._phase, self._phase_from_hint = reset, True
            # calls reach the provider a little after they are granted (a new connection takes
            # a while): look back a quarter window more
            since = reset - 1.25 * self.window_s
            # calls still in flight count as accepted until their own 429 removes them, so
            # the figure only falls, towards what the provider really accepted
            accepted = sum(1 for t in self._starts if t >= since)
            # a 429 at low traffic (another client, a burst rule) does not undo what the
            # provider already took in one window
            accepted = max(accepted, self._proven(reset))
            if accepted >= 1 and (self.learned_limit is None or accepted < self.learned_limit):
                current = self.requests_per_minute
                if current is None or accepted < current:
                    self.learned_limit = accepted
        if self._probed:  # the probe went too far: probe again later, from one step
            self._probe_every = min(2 * self._probe_every, 32)
            self._probed = False
        self._probe_step = 1
        self._paused_until = max(self._paused_until, now + retry_after_s)
        # the window that starts when the pause ends is the first that may prove quiet
        self._quiet_since = max(self._quiet_since, self._paused_until)
        self._dispatch()
        return retry_after_s

    def succeeded(
        self,
        remaining: int | None = None,
        reset_s: float | None = None,
        *,
        granted: float | None = None,
    ) -> None:
        """A call went through: the backoff starts again from its base, and the first such
        call gives the provider's window its phase. ``granted`` is its grant instant (default:
        the latest grant), remembered as a call the provider took.

        ``remaining`` calls left in the provider's window, resetting in ``reset_s``, when its
        response said so: the bucket then starts no more than that (less the calls already on
        their way) before the reset, so a provider that reports its headroom sees no 429.
        """
        self._consecutive_429s = 0
        now = self._now()
        if granted is None and self._starts:
            granted = self._starts[-1]
        if granted is not None:
            self._succeeded.append(granted)
        while self._succeeded and self._succeeded[0] <= now - _PROVEN_WINDOWS * self.window_s:
            self._succeeded.popleft()
        if remaining is not None and reset_s is not None:
            self._quota = (now + reset_s, remaining - self._in_flight)
            self._phase, self._phase_from_hint = now + reset_s, True
        if self._phase is None and self._starts:
            # The provider's window began when the first of these calls reached it, a network
            # latency after it was granted (the guard covers that): align windows to it. A
            # later 429's reset time corrects the phase.
            self._phase = self._starts[0]
            self._phase_from_hint = False

    def _proven(self, reset: float) -> int:
        """The most calls that went through in one of the provider's windows ending at
        ``reset`` (and the windows before it, as far as they are remembered)."""
        ends = (reset - k * self.window_s for k in range(_PROVEN_WINDOWS + 1))
        return max(
            sum(1 for t in self._succeeded if end - self.window_s <= t < end) for end in ends
        )

    def _probe(self, now: float) -> None:
        """Raise the learned limit by a step after every ``_probe_every`` windows with no 429;
        the step doubles while probes pass. Forget the limit once it reaches the configured
        one (or grows past a million when none is configured)."""
        since = max(self._quiet_since, self._probed_at)
        span = self._probe_every * self.window_s
        while self.learned_limit is not None and now - since >= span:
            since += span
            self._probed = True
            learned = self.learned_limit + self._probe_step
            self._probe_step *= 2
            ceiling = self.requests_per_minute or 1_000_000
            self.learned_limit = None if learned >= ceiling else learned
        self._probed_at = since
        if self.learned_limit is None:
            self._probe_step, self._probe_every = 1, 1

    def backoff_s(self, attempt: int) -> float:
        """:func:`jittered_backoff_s` with full jitter and this bucket's base and cap."""
        return jittered_backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s)

    def _next_start(self, now: float) -> float:
        """The earliest instant the head of the queue may start (``now`` if it may now)."""
        self._probe(now)
        when = max(now, self._paused_until)
        # Kept for two windows: pause() looks back one window from a reset in the future.
        while self._starts and self._starts[0] <= now - 2 * self.window_s:
            self._starts.popleft()
        if self._quota is not None:
            until, calls = self._quota
            if now >= until:
                self._quota = None
            elif calls <= 0:
                when = max(when, until)
        limit = self.limit
        if limit is None:
            return when
        last = max(self._starts[-1] if self._starts else -math.inf, self._paused_until)
        if self._phase is not None and last <= now - 2 * self.window_s:
            self._phase = None  # idle for a while: the provider's next window starts afresh
        if self._phase is None:  # sliding window: never more than `limit` in any window_s
            recent = [t for t in self._starts if t > when - self.window_s - self._guard]
            if len(recent) >= limit:
                oldest = recent[len(recent) - int(limit)]
                when = max(when, oldest + self.window_s + self._guard)
            return when
        # the provider's fixed windows: [phase + k * window_s, phase + (k + 1) * window_s)
        while True:
            k = math.floor((when - self._phase) / self.window_s)
            start = self._phase + k * self.window_s
            end = start + self.window_s
            # The provider's first window began when our first call reached it: no earlier.
            opening = k == 0 and not self._phase_from_hint
            if when < start + self._guard and not opening:
                when = start + self._guard
            elif when > end - self._guard or self._count(start, end) >= limit:
                when = end + self._guard
            else:
                return when

    def _count(self, start: float, end: float) -> int:
        return sum(1 for t in self._starts if start <= t < end)

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                heapq.heappop(self._waiters)
                continue
            busy = self.max_concurrent is not None and self._in_flight >= self.max_concurrent
            if head.slot and busy:
                return  # release() dispatches again
            now = self._now()
            when = self._next_start(now)
            if when > now:
                self._timer = asyncio.get_running_loop().call_at(when, self._dispatch)
                return
            heapq.heappop(self._waiters)
            self._starts.append(now)
            if self._quota is not None:
                self._quota = (self._quota[0], self._quota[1] - 1)
            self._in_flight += head.slot
            head.future.set_result(now)

    def state(self) -> LimiterState:
        now = self._now()
        self._probe(now)
        return LimiterState(
            self.name,
            self.requests_per_minute,
            self.learned_limit,
            self.max_concurrent,
            self._in_flight,
            sum(1 for w in self._waiters if not w.future.done()),
            sum(1 for t in self._starts if t > now - self.window_s),
            max(self._paused_until - now, 0.0),
            self._consecutive_429s,
        )
