"""Rate-limit signals from providers.

:func:`retry_after_s` reads how long a provider asks us to wait, from the headers of a 429 (or
503) response, in this order of precedence:

1. ``retry-after-ms``: milliseconds (Together's SDK honours it first).
2. ``Retry-After``: seconds or an HTTP date (RFC 9110 §10.2.3).
3. ``x-rate-limit-reset-at-utc``: the instant the window resets (Segmind, per its API notes),
   as ISO 8601, an HTTP date or Unix seconds.
4. ``x-ratelimit-reset``: time until the window resets (Together, OpenAI style): seconds, a
   duration such as ``1m30s``/``250ms``, or Unix seconds when the number is that large.

Waits are never negative and are capped at ``cap_s``, so a wrong clock cannot stall a queue for
a day.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["parse_duration_s", "retry_after_s"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
# Numbers this large are Unix timestamps, not durations (2001-09-09 onwards).
_EPOCH_THRESHOLD = 1_000_000_000


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
