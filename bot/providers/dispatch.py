"""Every provider call goes through the dispatcher, in this order:

1. money (paid providers): an open credit circuit, the known balance and the daily budgets per
   provider, guild and user may refuse the call before it starts;
2. the rate limit: the request waits its turn in its bucket, at most until ``wait_until``; when
   granted, the money is checked again (a 406 may have opened the circuit meanwhile) and the
   call's estimated cost is held against every budget (refused unless it fits under each, so
   concurrent calls, in this process or in others sharing the books, never overspend one);
3. the call (its further requests, such as a queued job's polls, count in the bucket too): a
   429 pauses the bucket (the request keeps its place); a 5xx, timeout or lost
   connection is retried with backoff unless marked not retryable; no credits open the circuit;
4. the books: the cost (reported, else estimated) settles the hold and the remaining credits are
   recorded; a call that fails releases its hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.errors import (
    BudgetExceeded,
    InsufficientCredits,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RequestExpired,
)
from bot.ops.config import LimitSettings, Settings
from bot.ops.metrics import PROVIDER_CALLS, RATE_LIMITED, RETRIES, SPEND_USD
from bot.providers.base import Provider, RequestGate, SynthesisJob, Usage
from bot.providers.books import Books, Cap, Hold, Refused, Spend, micro_usd
from bot.providers.credits import Ledger
from bot.providers.ratelimit import RateLimiter, WaitExpired
from bot.speech import AudioChunk, SpeechRequest, Voice

__all__ = ["Dispatched", "Dispatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dispatched:
    """The audio of one successful call, seconds from the call's start to its first chunk, and
    what it cost (USD; None when free or unknown)."""

    chunks: list[AudioChunk]
    first_audio_s: float
    cost_usd: float | None
    cost_estimated: bool


@dataclass(frozen=True, slots=True)
class _Route:
    """One request's way to one provider: the bucket it waits in, until when (loop times)."""

    provider: Provider
    request: SpeechRequest
    limiter: RateLimiter
    wait_until: float | None
    expiry: float | None


@dataclass(slots=True)
class _Call:
    """What one provider call delivered so far: its chunks, seconds to the first, its usage."""

    chunks: list[AudioChunk] = field(default_factory=list)
    first_audio_s: float = 0.0
    usage: Usage = field(default_factory=Usage)


def _has_credit_check(provider: Provider) -> bool:
    return type(provider).check_credits is not Provider.check_credits


class Dispatcher:
    """Holds one rate limiter per provider (or per provider/model when configured) and the
    books (``ledger``: the embedded SQLite :class:`Ledger` unless given, e.g. shared ones from
    :meth:`bot.ops.engine.Engine.books`). Shared by every source of requests."""

    def __init__(
        self,
        settings: Settings,
        ledger: Books | None = None,
        limiter_factory: Callable[..., RateLimiter] | None = None,
    ) -> None:
        """``limiter_factory`` makes each bucket (``RateLimiter``'s arguments; default: a
        :class:`RateLimiter` of this process's own)."""
        self.settings = settings
        self._ledger = ledger
        self._limiter_factory = limiter_factory or RateLimiter
        self._limiters: dict[str, RateLimiter] = {}

    @property
    def ledger(self) -> Books:
        """Opened on first use: a run that only uses the local voice writes no database."""
        if self._ledger is None:
            self._ledger = Ledger(self.settings.data_dir)
        return self._ledger

    def limiter(self, provider: Provider, voice: Voice) -> RateLimiter:
        """The bucket for ``voice``'s model if one is configured, else the provider's."""
        limits = self.settings.rate_limits
        model_key = f"{provider.name}/{voice.model}"
        if model_key in limits.models:
            key, chosen = model_key, limits.models[model_key]
        else:
            key = provider.name
            chosen = limits.providers.get(provider.name, provider.default_limits)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = self._make_limiter(key, chosen)
        return limiter

    def _make_limiter(self, key: str, limits: LimitSettings) -> RateLimiter:
        return self._limiter_factory(
            key,
            requests_per_minute=limits.requests_per_minute,
            max_concurrent=limits.max_concurrent,
            backoff_base_s=self.settings.rate_limits.backoff_base_s,
            backoff_cap_s=self.settings.rate_limits.backoff_cap_s,
            window_s=limits.window_s,
        )

    async def aclose(self) -> None:
        """Close the ledger's database, if it was opened."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def cost_estimate(self, provider: Provider, voice: Voice) -> float | None:
        costs = self.settings.credits.costs
        for key in (f"{provider.name}/{voice.model}", provider.name):
            if key in costs:
                return costs[key]
        return provider.estimated_cost(voice)

    # -- money ---------------------------------------------------------------------------------

    async def check_money(self, provider: Provider, voice: Voice, request: SpeechRequest) -> None:
        """Refuse a paid call that the credit circuit, the balance or a budget forbids.

        Raises :class:`InsufficientCredits` or :class:`BudgetExceeded`; spends nothing.
        """
        if not provider.paid:
            return
        name = provider.name
        ledger = self.ledger
        estimate = self.cost_estimate(provider, voice) or 0.0
        circuit = await ledger.circuit(name)
        if circuit is not None:
            if ledger.now() < circuit.next_check_at:
                raise InsufficientCredits(
                    name,
                    f"out of credits ({circuit.reason}); no paid call until the next credit check "
                    f"at {circuit.next_check_at:%H:%M:%S} UTC",
                )
            await self._recheck(provider, estimate)
        balance = await ledger.balance(name)
        if estimate and balance is not None and estimate > balance[0]:
            reason = f"this call costs ~${estimate:.4f} but only ${balance[0]:.4f} is left"
            await self._open(provider, reason)
            raise InsufficientCredits(name, reason)
        await self._check_budgets(provider, request, estimate)

    async def _recheck(self, provider: Provider, estimate: float) -> None:
        """The circuit is due for a check: close it if the provider has credits again.

        One caller among all sharing the books makes each due check; the others are refused
        until it closes the circuit."""
        name = provider.name
        if not await self.ledger.claim_check(name, self.settings.credits.check_interval_s):
            raise InsufficientCredits(
                name, "out of credits; another request is checking whether they are back"
            )
        try:
            credits = await provider.check_credits()
        except ProviderError as exc:
            log.warning("%s: credit check failed: %s", name, exc)
            await self.ledger.postpone_check(name, self.settings.credits.check_interval_s)
            raise InsufficientCredits(
                name, f"out of credits, and the credit check failed: {exc}"
            ) from None
        if credits is None:  # no check: let one call through; a new 406 re-opens the circuit
            log.info("%s: trying again after credits.reopen_after_s", name)
            await self.ledger.close_circuit(name)
            return
        await self.ledger.set_balance(name, credits)
        if credits > 0 and credits >= estimate:
            log.info("%s: credits are back (%.4f USD); closing the credit circuit", name, credits)
            await self.ledger.close_circuit(name)
            return
        await self.ledger.postpone_check(name, self.settings.credits.check_interval_s)
        raise InsufficientCredits(name, f"still out of credits: ${credits:.4f} left")

    async def _open(self, provider: Provider, reason: str) -> None:
        credits = self.settings.credits
        wait = credits.check_interval_s if _has_credit_check(provider) else credits.reopen_after_s
        await self.ledger.open_circuit(provider.name, reason, wait)
        log.warning(
            "%s: credit circuit open: %s (next check in %.0f s)", provider.name, reason, wait
        )

    def _caps(self, provider: Provider, request: SpeechRequest) -> list[Cap]:
        """The daily budgets a call of ``provider`` for ``request`` counts against."""
        budgets, name = self.settings.budgets, provider.name
        caps = [Cap("provider", name, budgets.providers.get(name), f"{name}'s daily budget")]
        if request.guild is not None:
            cap = budgets.guilds.get(request.guild, budgets.per_guild_usd)
            caps.append(Cap("guild", request.guild, cap, "this server's daily budget"))
        if request.requester is not None:
            cap = budgets.users.get(request.requester, budgets.per_user_usd)
            caps.append(Cap("requester", request.requester, cap, "your daily budget"))
        return caps

    async def _check_budgets(
        self, provider: Provider, request: SpeechRequest, estimate: float
    ) -> None:
        """Refuse early a call that a budget's spend alone (holds aside) already rules out."""
        for cap in self._caps(provider, request):
            if cap.usd is None:
                continue
            spent = await self.ledger.spent_today(**{cap.scope: cap.key})
            if micro_usd(spent) + micro_usd(estimate) > micro_usd(cap.usd):
                raise _over_budget(provider, Refused(cap, spent), estimate)

    async def _hold(self, provider: Provider, voice: Voice, request: SpeechRequest) -> Hold | None:
        """Hold a paid call's estimated cost against its budgets (None for a free provider).

        Raises :class:`BudgetExceeded` when it does not fit under one of them."""
        if not provider.paid:
            return None
        estimate = self.cost_estimate(provider, voice) or 0.0
        held = await self.ledger.reserve(estimate, self._caps(provider, request))
        if isinstance(held, Refused):
            raise _over_budget(provider, held, estimate)
        return held

    async def _release(self, hold: Hold | None) -> None:
        if hold is not None:
            await self.ledger.release(hold)

    async def _account(
        self,
        provider: Provider,
        voice: Voice,
        request: SpeechRequest,
        cost: float | None,
        remaining: float | None,
        hold: Hold | None = None,
    ) -> tuple[float | None, bool]:
        if remaining is not None:
            await self.ledger.set_balance(provider.name, remaining)
        estimated = cost is None
        usd = cost if cost is not None else self.cost_estimate(provider, voice)
        if usd is None or not (provider.paid or cost is not None):
            await self._release(hold)
            return None, estimated
        spend = Spend(
            provider.name, voice.model, usd, request.id, estimated, request.guild, request.requester
        )
        await self.ledger.record_spend(spend, hold)
        SPEND_USD.labels(provider.name).inc(usd)
        return usd, estimated

    # -- the call ------------------------------------------------------------------------------

    async def synthesize(
        self,
        provider: Provider,
        request: SpeechRequest,
        job: SynthesisJob,
        *,
        wait_until: float | None,
        expiry: float | None = None,
        on_chunk: Callable[[AudioChunk], Awaitable[None]] | None = None,
    ) -> Dispatched:
        """One provider call for ``job``, through money checks, rate limiter, retries and books.

        Money is checked before the wait and again when the limiter grants each attempt, so no
        paid call leaves after the circuit opened or a budget filled up.

        ``wait_until`` bounds the wait for the rate limiter, ``expiry`` is the request's expiry
        (event-loop times). ``on_chunk`` gets each chunk as it arrives; once it has had one, a
        failed call is not retried (the audio would start again). Raises :class:`RateLimited`,
        :class:`RequestExpired`, :class:`InsufficientCredits`, :class:`BudgetExceeded` or the
        provider's :class:`ProviderError` (also when the shared engine holding the books or the
        bucket cannot be reached: the fallback chain then speaks).
        """
        try:
            return await self._synthesize(provider, request, job, wait_until, expiry, on_chunk)
        except _engine_errors() as exc:
            log.warning("request %s: the shared engine cannot be reached: %s", request.id, exc)
            raise ProviderError(
                provider.name, f"the shared engine (engine.url) cannot be reached: {exc}"
            ) from None

    async def _synthesize(
        self,
        provider: Provider,
        request: SpeechRequest,
        job: SynthesisJob,
        wait_until: float | None,
        expiry: float | None,
        on_chunk: Callable[[AudioChunk], Awaitable[None]] | None,
    ) -> Dispatched:
        await self.check_money(provider, job.voice, request)
        limiter = self.limiter(provider, job.voice)
        job = dataclasses.replace(job, gate=_gate(limiter))  # its polls count in the bucket too
        route = _Route(provider, request, limiter, wait_until, expiry)
        ticket = limiter.ticket()  # kept across retries: a retried request keeps its place
        retries = 0
        while True:
            granted = await _turn(route, ticket)
            try:  # a 406 may have opened the circuit while this request waited its turn
                await self.check_money(provider, job.voice, request)
                hold = await self._hold(provider, job.voice, request)
            except BaseException:  # refused (or cancelled): hand the turn back
                limiter.release()
                raise
            call = _Call()
            delay = 0.0
            try:
                await self._held(hold, _stream(provider, job, call, on_chunk))
            except RateLimited as exc:
                _pause(route, exc, granted)
            except InsufficientCredits as exc:
                PROVIDER_CALLS.labels(provider.name, "no_credits").inc()
                await self._open(provider, exc.detail)
                raise
            except ProviderError as exc:
                heard = on_chunk is not None and bool(call.chunks)  # its audio already went out
                retry_in = self._retry_delay(route, exc, retries, heard)
                if retry_in is None:
                    raise
                delay, retries = retry_in, retries + 1
            else:
                break
            finally:
                limiter.release()
            await asyncio.sleep(delay)
        usage = call.usage
        limiter.succeeded(usage.rate_limit_remaining, usage.rate_limit_reset_s, granted=granted)
        PROVIDER_CALLS.labels(provider.name, "ok").inc()
        usd, estimated = await self._account(
            provider, job.voice, request, usage.cost_usd, usage.remaining_credits, hold
        )
        return Dispatched(call.chunks, call.first_audio_s, usd, estimated)

    async def _held(self, hold: Hold | None, call: Awaitable[None]) -> None:
        """Run ``call``; when it fails (or is cancelled), its ``hold`` is released."""
        try:
            await call
        except BaseException:
            await self._release(hold)
            raise

    def _retry_delay(
        self, route: _Route, exc: ProviderError, retries: int, heard: bool
    ) -> float | None:
        """Seconds until retry ``retries + 1`` of a failed call, or None when it must not be
        retried: not retryable, out of retries, past ``wait_until``, or its audio was ``heard``."""
        name = route.provider.name
        outcome = "unavailable" if isinstance(exc, ProviderUnavailable) else "failed"
        PROVIDER_CALLS.labels(name, outcome).inc()
        delay = route.limiter.backoff_s(retries + 1)
        wait_until = route.wait_until
        late = wait_until is not None and asyncio.get_running_loop().time() + delay > wait_until
        if not exc.retryable or retries >= self.settings.rate_limits.retries or late or heard:
            return None
        RETRIES.labels(name).inc()
        log.warning(
            "request %s: %s failed (%s); retry %d in %.1f s",
            route.request.id,
            name,
            exc,
            retries + 1,
            delay,
        )
        return delay


def _over_budget(provider: Provider, refused: Refused, estimate: float) -> BudgetExceeded:
    cap = refused.cap
    return BudgetExceeded(
        provider.name,
        f"{cap.what} is ${cap.usd or 0:.2f}; ${refused.spent_usd:.4f} spent today, this call "
        f"costs ~${estimate:.4f}",
    )


def _gate(limiter: RateLimiter) -> RequestGate:
    """The job's gate: each further request waits for room in ``limiter``'s window."""

    async def gate(timeout_s: float | None) -> None:
        try:
            await limiter.count(timeout_s=timeout_s)
        except WaitExpired as exc:
            raise TimeoutError(str(exc)) from None

    return gate


async def _turn(route: _Route, ticket: int) -> float:
    """Wait for the route's bucket to grant a call; its grant instant. Raises
    :class:`RequestExpired` when the expiry passed while waiting, else :class:`RateLimited`."""
    loop = asyncio.get_running_loop()
    limiter, name, request = route.limiter, route.provider.name, route.request
    timeout = None if route.wait_until is None else route.wait_until - loop.time()
    try:
        return await limiter.acquire(
            ticket=ticket, priority=request.priority.rank, timeout_s=timeout
        )
    except WaitExpired as exc:
        overdue = -float("inf") if route.expiry is None else loop.time() - route.expiry
        if overdue >= 0:
            raise RequestExpired(
                request.id,
                overdue,
                f"after waiting {exc.waited_s:.0f} s for {name}'s rate limit",
            ) from None
        raise RateLimited(
            name,
            f"still rate-limited after waiting {exc.waited_s:.0f} s (patience_s)",
            retry_after_s=limiter.state().paused_for_s or None,
            status=None,
        ) from None


async def _stream(
    provider: Provider,
    job: SynthesisJob,
    call: _Call,
    on_chunk: Callable[[AudioChunk], Awaitable[None]] | None,
) -> None:
    """Collect ``provider``'s audio for ``job`` into ``call`` (kept when the call fails)."""
    loop = asyncio.get_running_loop()
    called = loop.time()
    async for piece in provider.stream(job):
        if not call.chunks:
            call.first_audio_s = loop.time() - called
        call.chunks.append(piece.chunk)
        if piece.usage is not None:
            call.usage = piece.usage
        if on_chunk is not None:
            await on_chunk(piece.chunk)


def _pause(route: _Route, exc: RateLimited, granted: float) -> None:
    """A 429: the whole bucket pauses and the request keeps its place at the front."""
    name = route.provider.name
    PROVIDER_CALLS.labels(name, "rate_limited").inc()
    RATE_LIMITED.labels(name).inc()
    RETRIES.labels(name).inc()
    paused = route.limiter.pause(exc.retry_after_s, refused=granted)
    log.warning(
        "request %s: %s answered 429; its bucket pauses %.1f s and the request keeps its place",
        route.request.id,
        name,
        paused,
    )


def _engine_errors() -> tuple[type[Exception], ...]:
    """redis-py's base error once the shared engine has imported it (engine.url set), else
    none: an embedded process never imports redis (~0.15 s) just to name its exception."""
    errors = sys.modules.get("redis.exceptions")
    return (errors.RedisError,) if errors is not None else ()
