"""Counters kept in one place, in the Prometheus client's registry, for a metrics endpoint to
export. Label values are provider names and short outcome words, never request text or ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = [
    "ANNOUNCEMENTS",
    "CACHE_LOOKUPS",
    "FALLBACKS",
    "PROVIDER_CALLS",
    "RATE_LIMITED",
    "REGISTRY",
    "RETRIES",
    "SPEND_USD",
]

REGISTRY = CollectorRegistry(auto_describe=True)

PROVIDER_CALLS = Counter(
    "oyez_provider_calls",
    "Calls to TTS providers, by outcome (ok, rate_limited, unavailable, no_credits, failed)",
    ["provider", "outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "oyez_rate_limited", "429 answers from providers", ["provider"], registry=REGISTRY
)
RETRIES = Counter(
    "oyez_provider_retries",
    "Calls retried after a 429, 5xx, timeout or lost connection",
    ["provider"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "oyez_fallbacks",
    "Requests spoken by another provider than the one asked, and why",
    ["from_provider", "to_provider", "reason"],
    registry=REGISTRY,
)
SPEND_USD = Counter(
    "oyez_spend_usd", "Money spent on paid providers (USD)", ["provider"], registry=REGISTRY
)
CACHE_LOOKUPS = Counter(
    "oyez_cache_lookups",
    "Audio cache lookups, by result (hit, miss)",
    ["result"],
    registry=REGISTRY,
)
ANNOUNCEMENTS = Counter(
    "oyez_announcements",
    "Announcements (Home Assistant, HTTP API, schedules), by source and final state",
    ["source", "state"],
    registry=REGISTRY,
)
