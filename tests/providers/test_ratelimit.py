from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bot.providers.ratelimit import RateLimiter, parse_duration_s, retry_after_s

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2", 2.0), ("1.5", 1.5), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), ("6m0s", 360.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1x"])
def test_unreadable_durations(text: str) -> None:
    assert parse_duration_s(text) is None


def test_retry_after_ms_comes_first() -> None:
    headers = {"retry-after-ms": "1500", "Retry-After": "9", "x-ratelimit-reset": "30"}
    assert retry_after_s(headers, NOW) == pytest.approx(1.5)


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_s({"Retry-After": "7"}, NOW) == 7.0
    date = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    assert retry_after_s({"retry-after": date}, NOW) == pytest.approx(42)


def test_segmind_reset_instant() -> None:
    at = (NOW + timedelta(seconds=12)).isoformat().replace("+00:00", "Z")
    assert retry_after_s({"x-rate-limit-reset-at-utc": at}, NOW) == pytest.approx(12)
    epoch = str((NOW + timedelta(seconds=3)).timestamp())
    assert retry_after_s({"X-Rate-Limit-Reset-At-UTC": epoch}, NOW) == pytest.approx(3)


def test_ratelimit_reset_as_duration_or_epoch() -> None:
    assert retry_after_s({"x-ratelimit-reset": "20s"}, NOW) == pytest.approx(20)
    epoch = str(int((NOW + timedelta(seconds=8)).timestamp()))
    assert retry_after_s({"x-ratelimit-reset": epoch}, NOW) == pytest.approx(8)


def test_unreadable_header_falls_through_to_the_next() -> None:
    headers = {"Retry-After": "whenever", "x-ratelimit-reset": "4"}
    assert retry_after_s(headers, NOW) == pytest.approx(4)


def test_no_hint_and_bounds() -> None:
    assert retry_after_s({"content-type": "application/json"}, NOW) is None
    past = (NOW - timedelta(seconds=30)).isoformat()
    assert retry_after_s({"x-rate-limit-reset-at-utc": past}, NOW) == 0.0
    assert retry_after_s({"Retry-After": "999999"}, NOW, cap_s=600) == 600


async def _calls(limiter: RateLimiter, count: int) -> list[float]:
    """``count`` calls that go through, one after another: their grant instants."""
    starts = []
    for _ in range(count):
        starts.append(await limiter.acquire())
        limiter.succeeded()  # the default grant: the latest, this call's
        limiter.release()
    return starts


@pytest.mark.looptime
async def test_a_learned_limit_grows_back_after_windows_without_429() -> None:
    limiter = RateLimiter("p", requests_per_minute=10)
    await _calls(limiter, 3)
    refused = await limiter.acquire()
    limiter.release()
    limiter.pause(60, refused=refused)
    assert limiter.learned_limit == 3
    starts = await _calls(limiter, 60)
    per_window = Counter(int(t // 60) for t in starts)
    assert per_window[1] == 3  # the first window after the reset keeps to what was learned
    assert max(per_window.values()) == 10  # probed upward, up to the configured limit
    assert limiter.learned_limit is None


@pytest.mark.looptime
async def test_a_429_at_low_traffic_keeps_what_already_went_through() -> None:
    """Six went through in one window; a later 429 after three in the next window (another
    client, a burst rule) does not cut the limit to three."""
    limiter = RateLimiter("p", requests_per_minute=50)
    await _calls(limiter, 6)
    refused = await limiter.acquire()
    limiter.release()
    limiter.pause(60, refused=refused)
    assert limiter.learned_limit == 6
    await _calls(limiter, 3)
    refused = await limiter.acquire()
    limiter.release()
    limiter.pause(59, refused=refused)
    assert limiter.learned_limit == 6


@pytest.mark.looptime
async def test_a_follow_up_request_counts_but_takes_no_slot() -> None:
    """A job's status poll counts in the window, yet needs no concurrency slot: the call it
    belongs to holds one, so waiting for a slot could never end."""
    limiter = RateLimiter("p", requests_per_minute=3, max_concurrent=1)
    await limiter.acquire()  # the job's own call holds the only slot
    polls = [round(await limiter.count()) for _ in range(4)]
    assert polls == [0, 0, 61, 61]  # the call and two polls fill the window (1 s guard)
    assert limiter.state().in_flight == 1
