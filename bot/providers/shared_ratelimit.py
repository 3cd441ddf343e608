"""One rate-limit bucket per provider (or model) for every process sharing one Redis.

:class:`SharedRateLimiter` is a :class:`~bot.providers.ratelimit.RateLimiter` whose turns are
also granted by the cluster: this process keeps its own priority queue of waiters (and pauses
itself after its own 429s), and the head of that queue then asks Redis for a turn. One Lua
script, run atomically on the server's clock, holds what all the processes share:

- the provider's fixed windows: the first call granted anywhere gives them their phase (a 429's
  reset hint corrects it; two idle windows forget it), at most the limit start in one, none
  within ``guard`` of a window's edge (as :class:`RateLimiter` does, for one-way latency);
- the concurrency slots: a lease per call, renewed every few seconds while it runs, that
  expires :data:`LEASE_S` after its process died;
- a 429 anywhere: every process pauses until the provider's reset, the refused call leaves the
  window's count, and the calls that went through in that window, cluster-wide, become the
  learned limit when lower than the configured one. The learned limit holds
  :data:`LEARNED_WINDOWS` windows without a 429, then the configured one applies again (a
  coarser probe than :class:`RateLimiter`'s, which raises it step by step).

Keys under the engine's prefix ``P``: ``P limit:<name>`` (hash: phase, pause, learned limit),
``P limit:<name>:w:<phase>:<k>`` (calls started in window k of that phase), ``P
limit:<name>:leases`` (sorted set).

Not shared (kept per process): the headroom a provider reports on a success
(``x-ratelimit-remaining``), and the consecutive 429s that grow the backoff without a hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Coroutine

from redis.asyncio import Redis

from bot.providers.ratelimit import LimiterState, RateLimiter, WaitExpired

__all__ = ["LEARNED_WINDOWS", "LEASE_S", "SharedRateLimiter"]

log = logging.getLogger(__name__)

#: Seconds a concurrency slot outlives its last renewal (its process died).
LEASE_S = 15.0
#: Windows without a 429 after which a learned limit is dropped.
LEARNED_WINDOWS = 10
#: Longest pause between two asks for a turn while the cluster has no room, seconds.
MAX_POLL_S = 0.25

# KEYS: state hash, leases zset. ARGV: limit ('' none), window ms, max concurrent ('' none),
# lease id ('' no slot), lease ms, guard ms, learned windows. {1, now ms} when granted, else
# {0, ms to wait}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, guard = tonumber(ARGV[2]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'paused_until', 'phase', 'last', 'learned', 'learned_until')
local paused_until = tonumber(s[1] or '0')
if now < paused_until then return {0, paused_until - now} end
local limit = tonumber(ARGV[1])
local learned, learned_until = tonumber(s[4]), tonumber(s[5] or '0')
if learned and now < learned_until and (not limit or learned < limit) then limit = learned end
local slot = ARGV[4] ~= ''
if slot and ARGV[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {0, 20} end
end
if limit then
  local phase, last = tonumber(s[2]), tonumber(s[3] or '0')
  local fresh = false
  if not phase or now - math.max(last, paused_until) > 2 * window then
    phase, fresh = now, true
    redis.call('HSET', KEYS[1], 'phase', phase, 'hinted', 0)
  end
  local k = math.floor((now - phase) / window)
  local start = phase + k * window
  local opening = k == 0 and redis.call('HGET', KEYS[1], 'hinted') ~= '1'
  if now < start + guard and not opening then return {0, start + guard - now} end
  if now > start + window - guard then return {0, start + window + guard - now} end
  local count_key = KEYS[1] .. ':w:' .. phase .. ':' .. k
  if tonumber(redis.call('GET', count_key) or '0') >= limit then
    return {0, start + window + guard - now}
  end
  redis.call('INCR', count_key)
  redis.call('PEXPIRE', count_key, 3 * window)
end
redis.call('HSET', KEYS[1], 'last', now)
if slot then redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4]) end
return {1, now}
"""

# KEYS: state hash. ARGV: wait ms ('' no hint), refused grant ms ('' unknown), window ms,
# configured limit ('' none), learned windows, fallback wait ms. The pause, ms.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'phase', 'paused_until')
local phase = tonumber(s[1])
if phase and ARGV[2] ~= '' then
  local k = math.floor((tonumber(ARGV[2]) - phase) / window)
  local count_key = KEYS[1] .. ':w:' .. phase .. ':' .. k
  if tonumber(redis.call('GET', count_key) or '0') > 0 then redis.call('DECR', count_key) end
end
local wait = tonumber(ARGV[6])
if ARGV[1] ~= '' then
  wait = tonumber(ARGV[1])
  if phase then
    local k = math.floor((now - phase) / window)
    local accepted = tonumber(redis.call('GET', KEYS[1] .. ':w:' .. phase .. ':' .. k) or '0')
    local limit = tonumber(ARGV[4])
    if accepted >= 1 and (not limit or accepted < limit) then
      redis.call('HSET', KEYS[1], 'learned', accepted,
                 'learned_until', now + wait + tonumber(ARGV[5]) * window)
    end
  end
  redis.call('HSET', KEYS[1], 'phase', now + wait, 'hinted', 1)
end
local until_ = math.max(tonumber(s[2] or '0'), now + wait)
redis.call('HSET', KEYS[1], 'paused_until', until_)
return until_ - now
"""


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose windows, slots and pauses are shared through ``client``.

    The local limiter underneath queues this process's waiters by priority (with no window
    of its own: the cluster's is the one). Raises what :class:`RateLimiter` raises;
    ``WaitExpired`` also when the cluster had no room before ``timeout_s``.
    """

    def __init__(  # noqa: PLR0913 - RateLimiter's keyword-only tunables, and where they are shared
        self,
        name: str,
        client: Redis,
        prefix: str = "oyez:",
        *,
        requests_per_minute: float | None = None,
        max_concurrent: int | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        window_s: float = 60.0,
        lease_s: float = LEASE_S,
    ) -> None:
        super().__init__(
            name,
            max_concurrent=max_concurrent,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            window_s=window_s,
        )
        self.client = client
        self.key = f"{prefix}limit:{name}"
        self.shared_limit = requests_per_minute
        self.lease_s = lease_s
        self._acquire = client.register_script(_ACQUIRE)
        self._pause = client.register_script(_PAUSE)
        self._leases: list[str] = []
        #: Per call in flight: its local grant instant -> the cluster's (server ms).
        self.server_grants: dict[float, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._shared_pause_until = 0.0
        # no call granted this close to a window's edge (RateLimiter's guard, for latency)
        self.guard_s = min(0.05 * window_s, 1.0)

    # -- turns ---------------------------------------------------------------------------------

    async def acquire(
        self, *, ticket: int | None = None, priority: int = 0, timeout_s: float | None = None
    ) -> float:
        started = _loop_time()
        granted = await super().acquire(ticket=ticket, priority=priority, timeout_s=timeout_s)
        if not self.shared:
            return granted
        lease = uuid.uuid4().hex
        try:
            at = await self._turn(lease, started, timeout_s)
        except BaseException:
            super().release()
            raise
        self._leases.append(lease)
        old = granted - 3 * self.window_s  # calls that ended with neither success nor 429
        for instant in [i for i in self.server_grants if i < old]:
            del self.server_grants[instant]
        self.server_grants[granted] = at
        self._keep_renewing()
        return granted

    async def count(self, *, timeout_s: float | None = None) -> float:
        started = _loop_time()
        counted = await super().count(timeout_s=timeout_s)
        if self.shared:
            await self._turn("", started, timeout_s)
        return counted

    @property
    def shared(self) -> bool:
        """Whether there is anything to share: a limit or a concurrency cap. A bucket with
        neither (a local engine such as Piper) stays this process's, and never waits on the
        server."""
        return self.shared_limit is not None or self.max_concurrent is not None

    async def _turn(self, lease: str, started: float, timeout_s: float | None) -> int:
        """Ask the cluster until it grants a turn; the grant instant (server ms)."""
        limit = "" if self.shared_limit is None else str(math.floor(self.shared_limit))
        concurrent = "" if self.max_concurrent is None else str(self.max_concurrent)
        args = [limit, _ms(self.window_s), concurrent, lease, _ms(self.lease_s)]
        args += [_ms(self.guard_s), str(LEARNED_WINDOWS)]
        while True:
            granted, value = await self._acquire(keys=[self.key, f"{self.key}:leases"], args=args)
            if granted:
                return int(value)
            wait_s = min(int(value) / 1000, MAX_POLL_S)
            if int(value) > 20:  # a pause or a full window, not a busy slot
                self._shared_pause_until = _loop_time() + int(value) / 1000
            if timeout_s is not None and _loop_time() + wait_s > started + timeout_s:
                raise WaitExpired(self.name, _loop_time() - started)
            await asyncio.sleep(wait_s)

    def release(self) -> None:
        super().release()
        if self._leases:
            lease = self._leases.pop()
            self._spawn(self._drop(lease))

    async def _drop(self, lease: str) -> None:
        await self.client.zrem(f"{self.key}:leases", lease)

    def _keep_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name=f"oyez-leases-{self.name}")

    async def _renew(self) -> None:
        """Extend this process's slots while it holds any; ends when it holds none."""
        while self._leases:
            await asyncio.sleep(self.lease_s / 3)
            held = list(self._leases)
            if not held:
                return
            expiry = _server_ms(await self.client.time()) + round(self.lease_s * 1000)
            with contextlib.suppress(Exception):  # a missed renewal: the next one, or expiry
                await self.client.zadd(f"{self.key}:leases", dict.fromkeys(held, expiry), xx=True)

    # -- what the provider said ----------------------------------------------------------------

    def pause(self, retry_after_s: float | None, refused: float | None = None) -> float:
        """Pause this process (as :class:`RateLimiter` does) and every other one: the same
        wait, the refused call out of the shared window, a lower limit learned cluster-wide."""
        wait = super().pause(retry_after_s, refused)
        if not self.shared:
            return wait  # a bucket of this process's own, which keeps what it learns
        self.learned_limit = None  # the cluster learns it, from every process's calls
        at = self.server_grants.pop(refused, None) if refused is not None else None
        hint = "" if retry_after_s is None else _ms(retry_after_s)
        limit = "" if self.shared_limit is None else str(math.floor(self.shared_limit))
        args = [hint, "" if at is None else str(at), _ms(self.window_s), limit]
        args += [str(LEARNED_WINDOWS), _ms(wait)]
        self._spawn(self._share_pause(args))
        return wait

    async def _share_pause(self, args: list[str]) -> None:
        try:
            await self._pause(keys=[self.key], args=args)
        except Exception as exc:
            log.warning("%s: its 429 could not be shared with the others: %s", self.name, exc)

    def succeeded(
        self,
        remaining: int | None = None,
        reset_s: float | None = None,
        *,
        granted: float | None = None,
    ) -> None:
        if granted is not None:
            self.server_grants.pop(granted, None)
        super().succeeded(remaining, reset_s, granted=granted)

    def state(self) -> LimiterState:
        local = super().state()
        return LimiterState(
            self.name,
            self.shared_limit,
            local.learned_limit,
            self.max_concurrent,
            local.in_flight,
            local.waiting,
            local.started_last_minute,
            max(local.paused_for_s, self._shared_pause_until - _loop_time(), 0.0),
            local.consecutive_429s,
        )

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _ms(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


def _server_ms(time: tuple[int, int]) -> int:
    seconds, micros = time
    return int(seconds) * 1000 + int(micros) // 1000
