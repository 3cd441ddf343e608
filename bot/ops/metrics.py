"""Counters kept in one place, in the Prometheus client's registry, for a metrics endpoint to
export. Label values are provider names and short outcome words, never request text or ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ANNOUNCEMENTS",
    "CACHE_LOOKUPS",
    "FALLBACKS",
    "HOMEASSISTANT_RECONNECTS",
    "PROVIDER_CALLS",
    "QUEUE_DEPTH",
    "RATE_LIMITED",
    "REGISTRY",
    "REQUESTS",
    "RETRIES",
    "SPEND_USD",
    "SYNTHESIS_SECONDS",
    "SYNTH_JOBS",
    "TIME_TO_FIRST_AUDIO",
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
REQUESTS = Counter(
    "oyez_requests",
    "Speech requests by source, the provider that spoke, and outcome (ok, cached, failed, "
    "expired, invalid)",
    ["source", "provider", "outcome"],
    registry=REGISTRY,
)
SYNTHESIS_SECONDS = Histogram(
    "oyez_synthesis_seconds",
    "From a request entering the pipeline to its encoded audio, by provider (cache hits too)",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
    registry=REGISTRY,
)
TIME_TO_FIRST_AUDIO = Histogram(
    "oyez_time_to_first_audio_seconds",
    "From a request's arrival to its first audio leaving for the sink, by sink",
    ["sink"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "oyez_queue_depth",
    "Utterances waiting in Discord voice queues (all guilds)",
    registry=REGISTRY,
)
SYNTH_JOBS = Counter(
    "oyez_synth_jobs",
    "Synthesis jobs of the synth workers, by side (asker, worker) and outcome (asker: ok, "
    "failed, timeout, unavailable; worker: made, failed, expired, taken_over, requeued)",
    ["side", "outcome"],
    registry=REGISTRY,
)
HOMEASSISTANT_RECONNECTS = Counter(
    "oyez_homeassistant_reconnects",
    "Reconnections to Home Assistant's websocket after a drop",
    registry=REGISTRY,
)
