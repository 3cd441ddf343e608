from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bot.providers.ratelimit import parse_duration_s, retry_after_s

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
