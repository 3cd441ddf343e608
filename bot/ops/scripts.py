"""Lua scripts shared by every key one process holds for a while (a lease, a synthesis
flight, a schedule's claim, an announcement's duplicate window): renewed and released only by
their holder, in one server-side step, so a holder that was paused past its expiry never
extends or deletes the key another process has taken since. Lua scripts run atomically:
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/.
"""

from __future__ import annotations

__all__ = ["DELETE_IF_HELD", "RENEW_IF_HELD"]

#: KEYS: the key. ARGV: its value while this holder has it, the new expiry (ms). 1 when it was
#: the holder's (and is renewed), 0 when not.
RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

#: KEYS: the keys. ARGV: their value while this holder has them. Deletes those that have it;
#: returns 1.
DELETE_IF_HELD = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""
