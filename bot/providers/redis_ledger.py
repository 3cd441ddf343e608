"""The books in Redis (or Valkey): one credit circuit and one day's spend for every process.

Keys, under the engine's prefix ``P`` (``engine.key_prefix``, ``oyez:``):

- ``P circuit:<provider>``: hash ``opened_at``, ``reason``, ``next_check_at`` (ISO 8601) and
  ``next_check_ts`` (POSIX seconds, what :meth:`RedisLedger.claim_check` compares);
- ``P balance:<provider>``: hash ``remaining_usd``, ``seen_at``;
- ``P spend:<day>``: hash of micro-USD spent per cap name (``provider:segmind``, ``guild:<id>``,
  ``requester:<id>``) and ``all``, kept 8 days;
- ``P held:<day>``: hash of holds, each ``{"expires_ms", "usd", "caps"}`` JSON; a hold expires
  :data:`HOLD_S` after it was made on the server's clock, so a process that died mid-call frees
  its hold;
- ``P spend-log``: a stream of every spend row (about the last 100,000).

Every check-and-change is one Lua script (atomic on the server), so two processes never both
win a credit check or both hold a budget's last cent. The client must decode responses
(``decode_responses=True``, as :mod:`bot.ops.engine` opens it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from bot.providers.books import Cap, CircuitState, Hold, Refused, Spend, micro_usd

__all__ = ["HOLD_S", "RedisLedger"]

#: Seconds a hold lives without being settled or released (longer than any one call).
HOLD_S = 900.0
#: Days a day's spend stays readable.
SPEND_KEPT_S = 8 * 86400

# KEYS: spend hash, held hash. ARGV: hold id, micro-USD, lifetime ms, then (cap, micro cap or
# "") pairs. {1, "", 0} when held; {0, cap, micro spent or held} when a cap refuses.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[2])
local held = {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local hold = cjson.decode(entries[i + 1])
  if hold.expires_ms <= now then
    redis.call('HDEL', KEYS[2], entries[i])
  else
    for _, name in ipairs(hold.caps) do held[name] = (held[name] or 0) + hold.micro end
  end
end
local names = {}
for k = 4, #ARGV, 2 do
  local name, cap = ARGV[k], ARGV[k + 1]
  local total = tonumber(redis.call('HGET', KEYS[1], name) or '0') + (held[name] or 0)
  if cap ~= '' and total + amount > tonumber(cap) then
    return {0, name, total}
  end
  names[#names + 1] = name
end
local hold = {expires_ms = now + tonumber(ARGV[3]), micro = amount, caps = names}
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(hold))
redis.call('PEXPIRE', KEYS[2], 2 * 86400000)
return {1, '', 0}
"""

# KEYS: circuit hash. ARGV: now (POSIX s), next check (POSIX s), next check (ISO). 1: won.
_CLAIM_CHECK = """
local due = redis.call('HGET', KEYS[1], 'next_check_ts')
if not due or tonumber(due) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'next_check_ts', ARGV[2], 'next_check_at', ARGV[3])
return 1
"""

# KEYS: circuit hash. ARGV: next check (POSIX s), next check (ISO). Only an open circuit moves.
_POSTPONE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'next_check_ts', ARGV[1], 'next_check_at', ARGV[2])
return 1
"""


class RedisLedger:
    """:class:`~bot.providers.books.Books` on a shared Redis ``client`` under ``prefix``.

    ``now`` is injectable so tests control the clock (days and credit-check times); holds
    expire ``hold_s`` seconds after they were made, on the server's own clock. The client
    belongs to the caller: :meth:`close` leaves it open. Raises redis-py's ``RedisError`` when
    the server cannot be reached.
    """

    def __init__(
        self,
        client: Redis,
        prefix: str = "oyez:",
        now: Callable[[], datetime] | None = None,
        *,
        hold_s: float = HOLD_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.now = now or (lambda: datetime.now(UTC))
        self.hold_s = hold_s
        self._reserve = client.register_script(_RESERVE)
        self._claim = client.register_script(_CLAIM_CHECK)
        self._postpone = client.register_script(_POSTPONE)

    def close(self) -> None:
        """Nothing to do: the connection is the engine's."""

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _day(self) -> str:
        return self.now().date().isoformat()

    # -- the credit circuit --------------------------------------------------------------------

    async def open_circuit(self, provider: str, reason: str, check_after_s: float) -> CircuitState:
        now = self.now()
        later = now + timedelta(seconds=check_after_s)
        key = self._key("circuit", provider)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "opened_at", now.isoformat())
            pipe.hset(key, mapping={**_next_check(later), "reason": reason})
            await pipe.execute()
        state = await self.circuit(provider)
        return state or CircuitState(provider, now, reason, later)

    async def postpone_check(self, provider: str, check_after_s: float) -> None:
        later = self.now() + timedelta(seconds=check_after_s)
        await self._postpone(
            keys=[self._key("circuit", provider)], args=[later.timestamp(), later.isoformat()]
        )

    async def claim_check(self, provider: str, check_after_s: float) -> bool:
        now = self.now()
        later = now + timedelta(seconds=check_after_s)
        won = await self._claim(
            keys=[self._key("circuit", provider)],
            args=[now.timestamp(), later.timestamp(), later.isoformat()],
        )
        return bool(won)

    async def close_circuit(self, provider: str) -> None:
        await self.client.delete(self._key("circuit", provider))

    async def circuit(self, provider: str) -> CircuitState | None:
        fields = _text(await self.client.hgetall(self._key("circuit", provider)))
        if "next_check_at" not in fields:
            return None
        return CircuitState(
            provider,
            datetime.fromisoformat(fields.get("opened_at", fields["next_check_at"])),
            fields.get("reason", ""),
            datetime.fromisoformat(fields["next_check_at"]),
        )

    # -- balances ------------------------------------------------------------------------------

    async def set_balance(self, provider: str, remaining_usd: float) -> None:
        await self.client.hset(
            self._key("balance", provider),
            mapping={"remaining_usd": repr(remaining_usd), "seen_at": self.now().isoformat()},
        )

    async def balance(self, provider: str) -> tuple[float, datetime] | None:
        fields = _text(await self.client.hgetall(self._key("balance", provider)))
        if "remaining_usd" not in fields:
            return None
        return float(fields["remaining_usd"]), datetime.fromisoformat(fields["seen_at"])

    # -- spend ---------------------------------------------------------------------------------

    async def reserve(self, usd: float, caps: Sequence[Cap]) -> Hold | Refused:
        day = self._day()
        hold = Hold(uuid.uuid4().hex, usd, tuple(cap.name for cap in caps), day)
        pairs: list[str | int] = []
        for cap in caps:
            pairs += [cap.name, "" if cap.usd is None else micro_usd(cap.usd)]
        held, name, spent = await self._reserve(
            keys=[self._key("spend", day), self._key("held", day)],
            args=[hold.id, micro_usd(usd), round(self.hold_s * 1000), *pairs],
        )
        if held:
            return hold
        refusing = next(cap for cap in caps if cap.name == name)
        return Refused(refusing, int(spent) / 1_000_000)

    async def release(self, hold: Hold) -> None:
        await self.client.hdel(self._key("held", hold.day), hold.id)

    async def record_spend(self, spend: Spend, hold: Hold | None = None) -> None:
        """Book ``spend`` against today's provider, guild, requester and ``all`` totals, drop
        ``hold``, and append the row to the spend log: one transaction."""
        now = self.now()
        totals = self._key("spend", now.date().isoformat())
        names = ["all", f"provider:{spend.provider}"]
        names += [f"guild:{spend.guild}"] if spend.guild is not None else []
        names += [f"requester:{spend.requester}"] if spend.requester is not None else []
        row: dict[Any, Any] = {
            "at": now.isoformat(),
            "provider": spend.provider,
            "model": spend.model,
            "usd": repr(spend.usd),
            "request_id": spend.request_id,
            "estimated": int(spend.estimated),
            "guild": spend.guild or "",
            "requester": spend.requester or "",
        }
        async with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hincrby(totals, name, micro_usd(spend.usd))
            pipe.expire(totals, SPEND_KEPT_S)
            if hold is not None:
                pipe.hdel(self._key("held", hold.day), hold.id)
            pipe.xadd(self._key("spend-log"), row, maxlen=100_000, approximate=True)
            await pipe.execute()

    async def spent_today(
        self, *, provider: str | None = None, guild: str | None = None, requester: str | None = None
    ) -> float:
        """USD spent today by the one of provider, guild, requester given (none: all).

        Raises ``ValueError`` when more than one is given (only single totals are kept)."""
        given = [
            f"{scope}:{value}"
            for scope, value in (("provider", provider), ("guild", guild), ("requester", requester))
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError("the shared books keep one total per provider, guild or requester")
        day = self._key("spend", self._day())
        total = await self.client.hget(day, given[0] if given else "all")
        return int(total or 0) / 1_000_000


def _next_check(at: datetime) -> dict[FieldT, EncodableT]:
    return {"next_check_at": at.isoformat(), "next_check_ts": repr(at.timestamp())}


def _text(fields: dict[Any, Any]) -> dict[str, str]:
    """A hash as read with ``decode_responses=True``: text keys and values."""
    return {str(key): str(value) for key, value in fields.items()}
