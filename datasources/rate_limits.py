"""Rate limits' part in Redis: one key per client, spent from by one script per operation.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as a single
time): a budget of ``units`` per ``window`` gives back one unit every ``window / units``.
The key holds the moment at which the client's budget will be whole again, in Redis's
clock; spending ``cost`` units moves it ``cost`` units' time later, and is refused when
that would put it more than a window ahead of now. So a client may spend its whole budget
at once, then at the rate it comes back, never more than ``units`` in any window.

One key and one script per operation: a single round trip, atomic across every process,
with no list of past requests to keep or trim (a sliding log holds one entry per
request; fixed windows let a client spend twice its budget around their edges). The key
expires when the budget is whole again, so idle clients cost Redis nothing. Time is read
from Redis itself, so processes on machines whose clocks differ agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

MICROSECONDS = 1_000_000

# KEYS[1]: the client's key. ARGV: the cost, the microseconds one unit takes to come back,
# the window in microseconds. Returns whether it was spent, and how many microseconds of
# the window are in use after it (before it, when refused). Microseconds since the epoch
# are exact in Lua's doubles to a quarter of one; '%.17g' writes them back unrounded.
_SPEND = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local whole_at = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local after = whole_at + tonumber(ARGV[1]) * tonumber(ARGV[2])
if after - now > tonumber(ARGV[3]) then
  return {0, math.ceil(whole_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.17g', after), 'PX', math.ceil((after - now) / 1000))
return {1, math.ceil(after - now)}
"""


@dataclass(frozen=True)
class Spending:
    spent: bool
    # Microseconds until the client's budget is whole again.
    in_use: int


def rate_limit_key(client: str) -> str:
    return f"ratelimit:{client}"


async def spend(*, redis: Redis, client: str, cost: int, units: int, window: int) -> Spending:
    """Spend ``cost`` of ``client``'s ``units`` per ``window`` seconds, if it has them."""
    spent, in_use = await redis.eval(
        _SPEND,
        1,
        rate_limit_key(client),
        cost,
        repr(window * MICROSECONDS / units),
        window * MICROSECONDS,
    )
    return Spending(spent=bool(spent), in_use=int(in_use))
