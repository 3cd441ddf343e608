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
  learned limit when lower than the configured one. Windows without a 429 then probe it back
  up as :class:`RateLimiter` does: one more after a quiet window, then 2, 4, … while probes
  pass (after a probe met a 429, twice as many quiet windows first), until it reaches the
  configured limit;
- the headroom a provider reports on a success (``x-ratelimit-remaining`` and its reset): no
  more calls start anywhere before the reset than it said, less the calls in flight anywhere.

Keys under the engine's prefix ``P``: ``P limit:<name>`` (hash: phase, pause, learned limit and
its probe, headroom), ``P limit:<name>:w:<phase>:<k>`` (calls started in window k of that
phase), ``P limit:<name>:leases`` (sorted set).

Not shared (kept per process): a learned limit's floor from the calls that went through in the
last ten windows (:class:`RateLimiter` never learns less than that; the cluster learns the
count of the window that filled up), and the consecutive 429s that grow the backoff without a
hint.
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

__all__ = ["LEASE_S", "SharedRateLimiter"]

log = logging.getLogger(__name__)

#: Seconds a concurrency slot outlives its last renewal (its process died).
LEASE_S = 15.0
#: Longest pause between two asks for a turn while the cluster has no room, seconds.
MAX_POLL_S = 0.25

# The learned limit probed back up (RateLimiter._probe): after every `probe_every` windows
# with no 429 since the pause ended (or since the last probe), one `probe_step` more, the step
# doubling while probes pass; dropped once it reaches the configured limit. In Lua, run by
# _ACQUIRE before each turn. Sets `learned` (nil: none) from the state hash s and `now`.
_PROBE = """
local learned = tonumber(s[4])
if learned then
  local since = math.max(tonumber(s[5] or '0'), tonumber(s[6] or '0'))
  local step, every = tonumber(s[7] or '1'), tonumber(s[8] or '1')
  local span, probed = every * window, false
  while learned and now - since >= span do
    since, probed = since + span, true
    learned, step = learned + step, step * 2
    if learned >= (configured or 1000000) then learned = nil end
  end
  if probed and learned then
    redis.call('HSET', KEYS[1], 'learned', learned, 'probed_at', since, 'probe_step', step,
               'probed', 1)
  elseif probed then
    redis.call('HDEL', KEYS[1], 'learned')
    redis.call('HSET', KEYS[1], 'probed_at', since, 'probe_step', 1, 'probe_every', 1,
               'probed', 1)
  end
end
"""

# KEYS: state hash, leases zset. ARGV: limit ('' none), window ms, max concurrent ('' none),
# lease id ('' no slot), lease ms, guard ms. {1, now ms, learned} when granted, else {0, ms to
# wait, learned} (learned: the learned limit, -1 none).
_ACQUIRE = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, guard = tonumber(ARGV[2]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'paused_until', 'phase', 'last', 'learned',
                     'quiet_since', 'probed_at', 'probe_step', 'probe_every', 'quota_until',
                     'quota_calls')
local paused_until = tonumber(s[1] or '0')
if now < paused_until then return {0, paused_until - now, tonumber(s[4] or '-1')} end
local configured = tonumber(ARGV[1])
"""
    + _PROBE
    + """
local shown = learned or -1
local limit = configured
if learned and (not limit or learned < limit) then limit = learned end
local quota = now < tonumber(s[9] or '0')
if quota and tonumber(s[10] or '0') <= 0 then return {0, tonumber(s[9]) - now, shown} end
local slot = ARGV[4] ~= ''
if slot and ARGV[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {0, 20, shown} end
end
if limit then
  local phase, last = tonumber(s[2]), tonumber(s[3] or '0')
  if not phase or now - math.max(last, paused_until) > 2 * window then
    phase = now
    redis.call('HSET', KEYS[1], 'phase', phase, 'hinted', 0)
  end
  local k = math.floor((now - phase) / window)
  local start = phase + k * window
  local opening = k == 0 and redis.call('HGET', KEYS[1], 'hinted') ~= '1'
  if now < start + guard and not opening then return {0, start + guard - now, shown} end
  if now > start + window - guard then return {0, start + window + guard - now, shown} end
  local count_key = KEYS[1] .. ':w:' .. phase .. ':' .. k
  if tonumber(redis.call('GET', count_key) or '0') >= limit then
    return {0, start + window + guard - now, shown}
  end
  redis.call('INCR', count_key)
  redis.call('PEXPIRE', count_key, 3 * window)
end
if quota then redis.call('HINCRBY', KEYS[1], 'quota_calls', -1) end
redis.call('HSET', KEYS[1], 'last', now)
if slot then redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4]) end
return {1, now, shown}
"""
)

# KEYS: state hash. ARGV: wait ms ('' no hint), refused grant ms ('' unknown), window ms,
# configured limit ('' none), fallback wait ms. The pause, ms. As RateLimiter.pause: a hint
# gives the windows their phase and may teach a lower limit (the calls accepted in the window
# that filled up, cluster-wide); a probe that met this 429 waits twice as long next time.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'phase', 'paused_until', 'learned', 'probed',
                     'probe_every', 'quiet_since')
local phase = tonumber(s[1])
if phase and ARGV[2] ~= '' then
  local k = math.floor((tonumber(ARGV[2]) - phase) / window)
  local count_key = KEYS[1] .. ':w:' .. phase .. ':' .. k
  if tonumber(redis.call('GET', count_key) or '0') > 0 then redis.call('DECR', count_key) end
end
local wait = tonumber(ARGV[5])
if ARGV[1] ~= '' then
  wait = tonumber(ARGV[1])
  if phase then
    local k = math.floor((now - phase) / window)
    local accepted = tonumber(redis.call('GET', KEYS[1] .. ':w:' .. phase .. ':' .. k) or '0')
    local limit, learned = tonumber(ARGV[4]), tonumber(s[3])
    if accepted >= 1 and (not learned or accepted < learned) and (not limit or accepted < limit)
    then
      redis.call('HSET', KEYS[1], 'learned', accepted)
    end
  end
  redis.call('HSET', KEYS[1], 'phase', now + wait, 'hinted', 1)
end
if s[4] == '1' then
  local every = math.min(2 * tonumber(s[5] or '1'), 32)
  redis.call('HSET', KEYS[1], 'probe_every', every, 'probed', 0)
end
local until_ = math.max(tonumber(s[2] or '0'), now + wait)
local quiet = math.max(tonumber(s[6] or '0'), until_)
redis.call('HSET', KEYS[1], 'paused_until', until_, 'quiet_since', quiet, 'probe_step', 1)
return until_ - now
"""

# KEYS: state hash, leases zset. ARGV: calls remaining, ms to the reset. As
# RateLimiter.succeeded: no more than that (less the calls in flight anywhere) start before the
# reset, and the windows take their phase from it.
_HEADROOM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ = now + tonumber(ARGV[2])
local in_flight = redis.call('ZCOUNT', KEYS[2], now, '+inf')
redis.call('HSET', KEYS[1], 'quota_until', until_, 'quota_calls', tonumber(ARGV[1]) - in_flight,
           'phase', until_, 'hinted', 1)
return 1
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
        self._headroom = client.register_script(_HEADROOM)
        #: The cluster's learned limit, as the server last told it (None: none).
        self.shared_learned: int | None = None
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
        args.append(_ms(self.guard_s))
        while True:
            found = await self._acquire(keys=[self.key, f"{self.key}:leases"], args=args)
            granted, value, learned = (int(v) for v in found)
            self.shared_learned = None if learned < 0 else learned
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
        try:
            await self.client.zrem(f"{self.key}:leases", lease)
        except Exception as exc:  # the slot expires with its lease
            log.debug("%s: slot %s not given back: %s", self.name, lease, exc)

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
        args.append(_ms(wait))
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
        if self.shared and remaining is not None and reset_s is not None:
            self._spawn(self._share_headroom(remaining, reset_s))

    async def _share_headroom(self, remaining: int, reset_s: float) -> None:
        keys = [self.key, f"{self.key}:leases"]
        try:
            await self._headroom(keys=keys, args=[str(remaining), _ms(reset_s)])
        except Exception as exc:
            log.warning("%s: its headroom could not be shared with the others: %s", self.name, exc)

    def state(self) -> LimiterState:
        local = super().state()
        return LimiterState(
            self.name,
            self.shared_limit,
            self.shared_learned if self.shared else local.learned_limit,
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
