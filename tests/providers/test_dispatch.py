"""Rate limits, retries, credits, budgets and fallback, on a fast-forwarded clock (looptime)
where the tests wait out minutes, and against the simulated Segmind API where they need HTTP.

Over 450 lines: the dispatcher's policies interact, so they are tested together.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import (
    BudgetExceeded,
    InsufficientCredits,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RequestExpired,
)
from bot.ops import config
from bot.ops.config import Settings
from bot.ops.metrics import REGISTRY
from bot.providers.base import ProviderRegistry, SynthesisJob
from bot.providers.credits import Ledger
from bot.providers.dispatch import Dispatcher
from bot.providers.http import ErrorResponse, StatusRule, status_error
from bot.providers.ratelimit import RateLimiter, WaitExpired
from bot.speech import Priority, SpeechRequest
from bot.synthesis.pipeline import SpeechPipeline
from integrations import PROVIDERS
from integrations.segmind import SEGMIND_STATUSES, SegmindProvider
from integrations.together import TOGETHER_STATUSES
from tests.fakes.base import ScriptedResponse
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.support.scripted_provider import ScriptedProvider

TARGETS = {**PROVIDERS, "scripted": "tests.support.scripted_provider:ScriptedProvider"}


@pytest.fixture(autouse=True)
def scripted() -> Iterator[type[ScriptedProvider]]:
    ScriptedProvider.script.clear()
    ScriptedProvider.calls.clear()
    ScriptedProvider.cost_usd = 0.02
    ScriptedProvider.latency_s = 0.0
    yield ScriptedProvider
    ScriptedProvider.script.clear()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


# -- the limiter on its own ----------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("succeed", "expected"),
    [
        # nothing went through yet: a sliding window, with a 1 s guard after each minute
        (False, [0] * 5 + [61] * 5 + [122] * 2),
        # calls go through: windows align to the first call, so waits do not drift
        (True, [0] * 5 + [61] * 5 + [121] * 2),
    ],
)
async def test_requests_per_minute(succeed: bool, expected: list[int]) -> None:
    limiter = RateLimiter("p", requests_per_minute=5)
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(round(loop_time()))
        if succeed:
            limiter.succeeded()
        limiter.release()

    await asyncio.gather(*(one() for _ in range(12)))
    assert starts == expected


@pytest.mark.looptime
async def test_max_concurrent() -> None:
    limiter = RateLimiter("p", max_concurrent=2)
    running, peak = 0, 0

    async def one() -> None:
        nonlocal running, peak
        await limiter.acquire()
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1)
        running -= 1
        limiter.release()

    started = loop_time()
    await asyncio.gather(*(one() for _ in range(6)))
    assert peak == 2
    assert loop_time() - started == pytest.approx(3)


@pytest.mark.looptime
async def test_a_pause_stops_the_whole_bucket() -> None:
    limiter = RateLimiter("p")
    limiter.pause(30)
    started = loop_time()
    await asyncio.gather(limiter.acquire(), limiter.acquire())
    assert loop_time() - started == pytest.approx(30)


@pytest.mark.looptime
async def test_order_priority_and_kept_places() -> None:
    limiter = RateLimiter("p", max_concurrent=1)
    await limiter.acquire()  # occupy the only slot
    order: list[str] = []

    async def one(name: str, **kwargs: Any) -> None:
        await limiter.acquire(**kwargs)
        order.append(name)
        limiter.release()

    early = limiter.ticket()  # a request that was first in line, now retrying
    tasks = [
        asyncio.create_task(one("normal-1")),
        asyncio.create_task(one("normal-2")),
        asyncio.create_task(one("high", priority=Priority.HIGH.rank)),
        asyncio.create_task(one("retry", ticket=early)),
    ]
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == ["high", "retry", "normal-1", "normal-2"]


@pytest.mark.looptime
async def test_waiting_gives_up_at_its_timeout() -> None:
    limiter = RateLimiter("segmind")
    limiter.pause(100)
    with pytest.raises(WaitExpired, match="waiting 95 s for segmind's rate limit"):
        await limiter.acquire(timeout_s=95)
    assert limiter.state().waiting == 0


@pytest.mark.looptime
async def test_backoff_without_hint_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.providers.ratelimit.random.uniform", lambda low, high: high)  # noqa: ARG005 - stands in for random.uniform(a, b)
    limiter = RateLimiter("p", backoff_base_s=1, backoff_cap_s=5)
    assert [limiter.pause(None) for _ in range(6)] == [1, 2, 4, 5, 5, 5]
    limiter.succeeded()
    assert limiter.pause(None) == 1


@pytest.mark.looptime
async def test_a_429_with_a_reset_teaches_the_real_limit() -> None:
    limiter = RateLimiter("p", requests_per_minute=50)
    for _ in range(5):
        await limiter.acquire()
        limiter.succeeded()
        limiter.release()
    refused = await limiter.acquire()
    limiter.release()
    limiter.pause(60, refused=refused)  # the sixth was refused: the provider allows five
    assert limiter.learned_limit == 5
    assert limiter.limit == 5
    # from now on the provider's own windows count: five from the reset, then the next window
    starts = []
    for _ in range(7):
        starts.append(round(await limiter.acquire()))
        limiter.release()
    assert starts == [61] * 5 + [121] * 2  # reset at 60, plus a 1 s guard at each boundary


@pytest.mark.looptime
async def test_reported_headroom_is_respected() -> None:
    """A provider that says "2 calls left, resetting in 30 s" gets 2 calls, then none until
    the reset: it never has to answer 429."""
    limiter = RateLimiter("p")
    await limiter.acquire()
    limiter.release()  # the dispatcher releases, then reports the success
    limiter.succeeded(remaining=2, reset_s=30)
    starts = []
    for _ in range(4):
        starts.append(round(await limiter.acquire()))
        limiter.release()
    assert starts == [0, 0, 30, 30]


def test_headroom_headers() -> None:
    from bot.providers.ratelimit import remaining_calls

    assert remaining_calls({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "12"}) == (7, 12)
    assert remaining_calls({"X-Rate-Limit-Remaining": "0"}) == (0, None)
    assert remaining_calls({"content-type": "audio/wav"}) == (None, None)


# -- the dispatcher: 429s, retries, expiry -------------------------------------------------


async def _dispatch(settings: Settings, request: SpeechRequest | None = None, **kwargs: Any) -> Any:
    registry = ProviderRegistry(settings, TARGETS)
    dispatcher = Dispatcher(settings)
    provider = registry.get("scripted")
    voice = await provider.resolve_voice(None, None)
    request = request or SpeechRequest(text="hi", provider="scripted")
    job = SynthesisJob(request.id, "hi", voice)
    try:
        return await dispatcher.synthesize(provider, request, job, **{"wait_until": None, **kwargs})
    finally:
        dispatcher.ledger.close()


NOW = datetime.now(UTC)


def _429(
    provider: str, statuses: Mapping[int, StatusRule], headers: dict[str, str], body: bytes
) -> ProviderError:
    return status_error(ErrorResponse(provider, 429, headers, body, "m"), statuses)


def together_429(headers: dict[str, str]) -> ProviderError:
    return _429("together", TOGETHER_STATUSES, headers, b"{}")


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("error", "wait_s"),
    [
        (together_429({"retry-after-ms": "1500", "Retry-After": "9"}), 1.5),
        (together_429({"Retry-After": "7"}), 7.0),
        (
            _429(
                "segmind",
                SEGMIND_STATUSES,
                {"x-rate-limit-reset-at-utc": (NOW + timedelta(seconds=12)).isoformat()},
                b'{"error": "Too many requests"}',
            ),
            12.0,
        ),
        (together_429({"x-ratelimit-reset": "20"}), 20.0),
    ],
)
async def test_each_429_hint_is_waited_out(
    settings: Settings, scripted: type[ScriptedProvider], error: RateLimited, wait_s: float
) -> None:
    scripted.script.append(error)
    result = await _dispatch(settings)
    assert result.chunks
    first, second = scripted.calls
    assert second - first == pytest.approx(wait_s, abs=0.5)


@pytest.mark.looptime
async def test_429_without_hint_backs_off_growing_and_capped(
    tmp_path: Path, scripted: type[ScriptedProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.providers.ratelimit.random.uniform", lambda low, high: high)  # noqa: ARG005 - stands in for random.uniform(a, b)
    settings = config.load(data_dir=tmp_path, rate_limits={"backoff_base_s": 1, "backoff_cap_s": 5})
    scripted.script.extend(
        RateLimited("scripted", "slow down", retry_after_s=None) for _ in range(5)
    )
    before = REGISTRY.get_sample_value("oyez_rate_limited_total", {"provider": "scripted"}) or 0
    await _dispatch(settings)
    calls = scripted.calls
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(calls)]
    assert gaps == [1, 2, 4, 5, 5]
    after = REGISTRY.get_sample_value("oyez_rate_limited_total", {"provider": "scripted"})
    assert after == before + 5


@pytest.mark.looptime
async def test_5xx_is_retried_a_bounded_number_of_times(
    settings: Settings, scripted: type[ScriptedProvider]
) -> None:
    scripted.script.extend(
        ProviderUnavailable("scripted", "bad gateway", status=502) for _ in range(3)
    )
    with pytest.raises(ProviderUnavailable, match="bad gateway"):
        await _dispatch(settings)
    assert len(scripted.calls) == 3  # the first try and rate_limits.retries (2) retries


@pytest.mark.looptime
async def test_expired_while_waiting_is_never_spoken(
    settings: Settings, scripted: type[ScriptedProvider]
) -> None:
    scripted.script.append(RateLimited("scripted", "slow down", retry_after_s=300))
    expiry = loop_time() + 95
    with pytest.raises(RequestExpired, match="after waiting 95 s for scripted's rate limit"):
        await _dispatch(settings, wait_until=expiry, expiry=expiry)
    assert len(scripted.calls) == 1  # the 429; never called again


@pytest.mark.looptime
async def test_patience_runs_out(settings: Settings, scripted: type[ScriptedProvider]) -> None:
    scripted.script.append(RateLimited("scripted", "slow down", retry_after_s=300))
    with pytest.raises(RateLimited, match="still rate-limited after waiting 20 s"):
        await _dispatch(settings, wait_until=loop_time() + 20)


@pytest.mark.looptime
async def test_no_paid_call_leaves_the_queue_after_a_406(
    tmp_path: Path, scripted: type[ScriptedProvider]
) -> None:
    """Requests already waiting on the limiter when a 406 opens the circuit are refused with
    the circuit's reason when their turn comes: only the first call reached the provider."""
    settings = config.load(
        data_dir=tmp_path, rate_limits={"providers": {"scripted": {"max_concurrent": 1}}}
    )
    scripted.latency_s = 1.0
    scripted.script.append(InsufficientCredits("scripted", "Insufficient credits", status=406))
    registry = ProviderRegistry(settings, TARGETS)
    dispatcher = Dispatcher(settings)
    provider = registry.get("scripted")
    voice = await provider.resolve_voice(None, None)

    async def one() -> Any:
        request = SpeechRequest(text="hi", provider="scripted")
        job = SynthesisJob(request.id, "hi", voice)
        return await dispatcher.synthesize(provider, request, job, wait_until=None)

    try:
        results = await asyncio.gather(*(one() for _ in range(6)), return_exceptions=True)
    finally:
        dispatcher.ledger.close()
    assert len(scripted.calls) == 1
    assert all(isinstance(r, InsufficientCredits) for r in results)
    assert all("Insufficient credits" in str(r) for r in results[1:])
    assert dispatcher.limiter(provider, voice).state().in_flight == 0


# -- credits, budgets and fallback through the whole pipeline ------------------------------


@pytest.fixture
def clock() -> list[datetime]:
    return [datetime(2026, 11, 21, 12, 0, tzinfo=UTC)]


def make_pipeline(settings: Settings, clock: list[datetime]) -> SpeechPipeline:
    ledger = Ledger(settings.data_dir, now=lambda: clock[0])
    return SpeechPipeline(settings, dispatcher=Dispatcher(settings, ledger))


@pytest.fixture
async def fake() -> AsyncIterator[FakeSegmind]:
    async with FakeSegmind() as server:
        yield server


def segmind_settings(tmp_path: Path, fake: FakeSegmind, **more: Any) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": fake.base_url}},
        **more,
    )


def paid_calls(fake: FakeSegmind) -> int:
    return len(fake.requests_to("/v1/chatterbox-tts"))


async def test_406_opens_the_credit_circuit_until_a_check_passes(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(tmp_path, fake)
    pipeline = make_pipeline(settings, clock)
    ask = SpeechRequest(text="Hello.", provider="segmind")
    fallbacks_before = (
        REGISTRY.get_sample_value(
            "oyez_fallbacks_total",
            {"from_provider": "segmind", "to_provider": "piper", "reason": "InsufficientCredits"},
        )
        or 0
    )
    try:
        assert (await pipeline.speak(ask)).voice.provider == "segmind"
        fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
        spoken = await pipeline.speak(ask)
        assert spoken.voice.provider == "piper"
        assert "Insufficient credits" in spoken.fallbacks[0].reason
        assert paid_calls(fake) == 2

        # circuit open, check not due: nothing at all reaches Segmind
        requests_before = len(fake.requests)
        assert (await pipeline.speak(ask)).voice.provider == "piper"
        assert len(fake.requests) == requests_before

        # due, but the free credit check says still empty: still no paid call
        fake.credits = 0.0
        clock[0] += timedelta(seconds=61)
        third = await pipeline.speak(ask)
        assert third.voice.provider == "piper"
        assert "still out of credits" in third.fallbacks[0].reason
        assert len(fake.requests_to("/v1/get-user-credits")) == 1
        assert paid_calls(fake) == 2
    finally:
        await pipeline.aclose()

    # a restart remembers: the circuit is in the data directory
    restarted = make_pipeline(settings, clock)
    try:
        assert (await restarted.speak(ask)).voice.provider == "piper"
        assert paid_calls(fake) == 2
        fake.credits = 5.0
        clock[0] += timedelta(seconds=61)
        assert (await restarted.speak(ask)).voice.provider == "segmind"
        assert paid_calls(fake) == 3
    finally:
        await restarted.aclose()
    fallbacks_after = REGISTRY.get_sample_value(
        "oyez_fallbacks_total",
        {"from_provider": "segmind", "to_provider": "piper", "reason": "InsufficientCredits"},
    )
    assert fallbacks_after is not None
    assert fallbacks_after >= fallbacks_before + 4


async def test_strict_request_gets_the_credit_error(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    pipeline = make_pipeline(segmind_settings(tmp_path, fake), clock)
    fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
    try:
        with pytest.raises(InsufficientCredits, match="HTTP 406"):
            await pipeline.speak(SpeechRequest(text="Hi.", provider="segmind", fallback=False))
        with pytest.raises(InsufficientCredits, match="no paid call until the next credit check"):
            await pipeline.speak(SpeechRequest(text="Hi.", provider="segmind", fallback=False))
    finally:
        await pipeline.aclose()
    assert paid_calls(fake) == 1


async def test_a_call_costing_more_than_what_is_left_is_not_started(
    tmp_path: Path, clock: list[datetime]
) -> None:
    async with FakeSegmind(credits=0.03) as fake:
        pipeline = make_pipeline(segmind_settings(tmp_path, fake), clock)
        try:
            await pipeline.speak(SpeechRequest(text="One.", provider="segmind"))
            second = await pipeline.speak(SpeechRequest(text="Two.", provider="segmind"))
        finally:
            await pipeline.aclose()
        assert second.voice.provider == "piper"
        assert "costs ~$0.0200 but only $0.0100 is left" in second.fallbacks[0].reason
        assert paid_calls(fake) == 1


async def test_budgets_fall_back_or_refuse(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(
        tmp_path, fake, budgets={"providers": {"segmind": 0.03}, "per_guild_usd": 0.05}
    )
    pipeline = make_pipeline(settings, clock)
    try:
        first = await pipeline.speak(SpeechRequest(text="One.", provider="segmind", guild="g1"))
        assert first.cost_usd == pytest.approx(0.02)
        second = await pipeline.speak(SpeechRequest(text="Two.", provider="segmind"))
        assert second.voice.provider == "piper"
        assert "segmind's daily budget is $0.03" in second.fallbacks[0].reason
        with pytest.raises(BudgetExceeded):
            await pipeline.speak(SpeechRequest(text="Two.", provider="segmind", fallback=False))
        clock[0] += timedelta(days=1)  # a new UTC day, a new budget
        third = await pipeline.speak(SpeechRequest(text="Three.", provider="segmind"))
        assert third.voice.provider == "segmind"
    finally:
        await pipeline.aclose()
    assert paid_calls(fake) == 2


async def test_guild_and_user_budgets(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(
        tmp_path, fake, budgets={"per_guild_usd": 0.03, "users": {"discord:7": 0.01}}
    )
    pipeline = make_pipeline(settings, clock)
    try:
        await pipeline.speak(SpeechRequest(text="One.", provider="segmind", guild="g1"))
        other_guild = await pipeline.speak(
            SpeechRequest(text="Hi.", provider="segmind", guild="g2")
        )
        assert other_guild.voice.provider == "segmind"
        same_guild = await pipeline.speak(SpeechRequest(text="Hi.", provider="segmind", guild="g1"))
        assert "this server's daily budget" in same_guild.fallbacks[0].reason
        user = await pipeline.speak(
            SpeechRequest(text="Hi.", provider="segmind", requester="discord:7")
        )
        assert "your daily budget is $0.01" in user.fallbacks[0].reason
    finally:
        await pipeline.aclose()


async def test_rate_limited_past_patience_falls_back(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(tmp_path, fake, patience_s=0.3)
    pipeline = make_pipeline(settings, clock)
    fake.inject_error("/v1/chatterbox-tts", 429, "Too many requests", headers={"Retry-After": "30"})
    try:
        spoken = await pipeline.speak(SpeechRequest(text="Hello.", provider="segmind"))
    finally:
        await pipeline.aclose()
    assert spoken.voice.provider == "piper"
    assert "still rate-limited after waiting 0 s" in spoken.fallbacks[0].reason
    assert paid_calls(fake) == 1


async def test_down_provider_falls_back_after_bounded_retries(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(tmp_path, fake, rate_limits={"backoff_base_s": 0.01})
    pipeline = make_pipeline(settings, clock)
    fake.inject_error("/v1/chatterbox-tts", 502, "Bad gateway", count=3)
    try:
        spoken = await pipeline.speak(SpeechRequest(text="Hello.", provider="segmind"))
    finally:
        await pipeline.aclose()
    assert spoken.voice.provider == "piper"
    assert "Bad gateway" in spoken.fallbacks[0].reason
    assert paid_calls(fake) == 3
    assert fake.billed_calls == 0


async def test_no_v2_job_is_ever_submitted_twice(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(tmp_path, fake, rate_limits={"backoff_base_s": 0.01})
    pipeline = make_pipeline(settings, clock)
    # the submit fails before a job exists (retried), then polling fails around the job
    fake.inject_error("/v2/openvoice", 502, "Bad gateway")
    fake.script(
        "GET",
        "/v2/requests/{request_id}/status",
        ScriptedResponse(500, {"error": "oops"}),
        ScriptedResponse(429, {"error": "slow"}, {"Retry-After": "0.1"}),
        ScriptedResponse(404, {"error": "Request not found or expired"}),
    )
    try:
        spoken = await pipeline.speak(
            SpeechRequest(text="Hello.", provider="segmind", model="openvoice")
        )
    finally:
        await pipeline.aclose()
    assert spoken.voice.provider == "piper"
    assert "unknown or expired" in spoken.fallbacks[0].reason
    assert len(fake.requests_to("/v2/openvoice")) == 2  # the failed submit and the job
    assert fake.billed_calls == 1
    assert len(fake.jobs) == 1


async def test_a_hung_v2_submit_is_not_submitted_again(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    """Accepted and billed, never answered: the model's timeout_s ends the wait and the request
    falls back with the reason instead of submitting (and paying for) the job again."""
    settings = config.load(
        data_dir=tmp_path / "data",
        providers={
            "segmind": {
                "api_key": DEFAULT_API_KEY,
                "base_url": fake.base_url,
                "timeout_s": {"openvoice": 0.5},
            }
        },
        rate_limits={"backoff_base_s": 0.01},
    )
    pipeline = make_pipeline(settings, clock)
    fake.hang_next_submit(3.0)
    started = asyncio.get_running_loop().time()
    try:
        spoken = await pipeline.speak(
            SpeechRequest(text="Hello.", provider="segmind", model="openvoice")
        )
    finally:
        await pipeline.aclose()
    assert asyncio.get_running_loop().time() - started < 2.5
    assert spoken.voice.provider == "piper"
    reason = spoken.fallbacks[0].reason
    assert "the v2 submit got no answer (no answer within 0.5 s)" in reason
    assert "not submitted again" in reason
    assert len(fake.requests_to("/v2/openvoice")) == 1
    assert fake.billed_calls == 1


async def test_v2_status_polls_count_in_the_bucket(tmp_path: Path, clock: list[datetime]) -> None:
    """Segmind counts every authenticated request against the plan (v2 polls too): a job of
    one submit, five status polls and one result takes seven places in its bucket, so with room
    for three per one-second window it spreads over three windows (3 + 3 + 1)."""
    async with FakeSegmind(v2_queued_polls=2, v2_processing_polls=2) as fake:
        settings = config.load(
            data_dir=tmp_path / "data",
            providers={
                "segmind": {
                    "api_key": DEFAULT_API_KEY,
                    "base_url": fake.base_url,
                    "poll": {"first_s": 0.01, "factor": 1.0, "max_s": 0.01},
                }
            },
            rate_limits={"providers": {"segmind": {"requests_per_minute": 3, "window_s": 1.0}}},
        )
        pipeline = make_pipeline(settings, clock)
        try:
            spoken = await pipeline.speak(
                SpeechRequest(text="Hello.", provider="segmind", model="openvoice")
            )
        finally:
            await pipeline.aclose()
        api_calls = sorted(r.time for r in fake.requests if not r.path.startswith("/media/"))
    assert spoken.voice.provider == "segmind"
    assert len(api_calls) == 7
    assert api_calls[-1] - api_calls[0] >= 2.0


def status_polls(fake: FakeSegmind) -> list[float]:
    return [r.time for r in fake.requests if r.path.endswith("/status")]


async def test_a_429_on_a_status_poll_delays_that_job_only(
    tmp_path: Path, clock: list[datetime]
) -> None:
    """The hint of a 429 on one job's status poll stretches that job's next poll; it does not
    pause the bucket, so another request's submit goes out at once."""
    async with FakeSegmind(v2_queued_polls=1, v2_processing_polls=1) as fake:
        fake.script(
            "GET",
            "/v2/requests/{request_id}/status",
            ScriptedResponse(429, {"error": "Rate limit exceeded"}, {"Retry-After": "2"}),
        )
        settings = config.load(
            data_dir=tmp_path / "data",
            providers={
                "segmind": {
                    "api_key": DEFAULT_API_KEY,
                    "base_url": fake.base_url,
                    "poll": {"first_s": 0.05, "factor": 1.0, "max_s": 0.05},
                }
            },
            rate_limits={"providers": {"segmind": {"requests_per_minute": 50}}},
        )
        pipeline = make_pipeline(settings, clock)
        try:
            queued = SpeechRequest(text="Hello.", provider="segmind", model="openvoice")
            polling = asyncio.create_task(pipeline.speak(queued))
            for _ in range(500):  # until its first poll met the 429
                if status_polls(fake):
                    break
                await asyncio.sleep(0.01)
            started = loop_time()
            other = await pipeline.speak(SpeechRequest(text="Goodbye.", provider="segmind"))
            other_s = loop_time() - started
            spoken = await polling
        finally:
            await pipeline.aclose()
        polls = status_polls(fake)
    assert other.voice.provider == spoken.voice.provider == "segmind"
    assert other_s < 1.0  # the bucket was not paused for the poll's 2 s
    assert polls[1] - polls[0] >= 1.9  # the job itself waited out the hint


async def test_credit_checks_take_no_place_in_the_bucket(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    """``/v1/get-user-credits`` is free: with room for two calls a minute, a 406, the credit
    check that closes the circuit and the next paid call all go out at once."""
    settings = segmind_settings(
        tmp_path, fake, rate_limits={"providers": {"segmind": {"requests_per_minute": 2}}}
    )
    pipeline = make_pipeline(settings, clock)
    ask = SpeechRequest(text="Hello.", provider="segmind")
    try:
        fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
        assert (await pipeline.speak(ask)).voice.provider == "piper"
        clock[0] += timedelta(seconds=61)  # the credit check is due
        started = loop_time()
        spoken = await pipeline.speak(ask)
        waited_s = loop_time() - started
    finally:
        await pipeline.aclose()
    assert spoken.voice.provider == "segmind"
    assert len(fake.requests_to("/v1/get-user-credits")) == 1
    assert paid_calls(fake) == 2
    assert waited_s < 5.0  # not the minute a third place in the bucket would have cost


async def test_unconfigured_fallback_entries_are_skipped_with_a_note(
    tmp_path: Path, fake: FakeSegmind, clock: list[datetime]
) -> None:
    settings = segmind_settings(tmp_path, fake, fallback=["together", "piper"])
    pipeline = make_pipeline(settings, clock)
    fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
    try:
        spoken = await pipeline.speak(SpeechRequest(text="Hello.", provider="segmind"))
    finally:
        await pipeline.aclose()
    assert spoken.voice.provider == "piper"
    reasons = {note.provider: note.reason for note in spoken.fallbacks}
    assert "TOGETHER_API_KEY" in reasons["together"]
    assert "Insufficient credits" in reasons["segmind"]


def test_fallback_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OYEZ_FALLBACK", '["segmind/chatterbox-tts", "piper"]')
    assert config.load().fallback == ["segmind/chatterbox-tts", "piper"]


async def test_limits_default_from_the_provider_and_are_configurable(
    tmp_path: Path, fake: FakeSegmind
) -> None:
    default = segmind_settings(tmp_path, fake)
    provider = SegmindProvider.from_settings(default)
    voice = await provider.resolve_voice(None, None)
    # Segmind documents 5 requests a minute on its free plan
    assert Dispatcher(default).limiter(provider, voice).state().requests_per_minute == 5
    pro = segmind_settings(
        tmp_path,
        fake,
        rate_limits={
            "providers": {"segmind": {"requests_per_minute": 50}},
            "models": {"segmind/orpheus-3b-0.1": {"max_concurrent": 1}},
        },
    )
    dispatcher = Dispatcher(pro)
    assert dispatcher.limiter(provider, voice).state().requests_per_minute == 50
    orpheus = await provider.resolve_voice("tara", None)
    own = dispatcher.limiter(provider, orpheus)
    assert own.name == "segmind/orpheus-3b-0.1"
    assert own.state().max_concurrent == 1
    await provider.aclose()
