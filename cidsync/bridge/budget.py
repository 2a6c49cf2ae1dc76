"""DICT's rate limits, kept on our side: one token bucket per (participant, operation), shared by every worker.

DICT's buckets are per participant: `VerifySync` 10 a minute (50 at most saved up) and `ListCidSetEvents`
20 a minute (100) serve all five key types, their followers and their reconciliations at once. Asking DICT
until it refuses (HTTP 429) spends its goodwill and tells us nothing about who needed the call; so the
Bridge client takes a token here first, from a bucket in Redis that every worker replica shares, and
a call with no token left fails at once as DICT's own refusal would (`RateLimited` with the wait), without
reaching DICT. The callers already wait DICT's retry-after durably.

Shared by need: nothing is allotted per key type. A quiet pair's follower backs off to one call a minute
and a busy one reads page after page, so the busy pair gets what the quiet ones leave. What a follower
reads routinely may not spend the last `reserve` of a bucket (`BridgeClient.reserving`): that much is
always left for reconciliations and proofs, which a busy pair's follower cannot starve.

The buckets are DICT's published policies, slightly smaller (`MARGIN`) so that our refill and DICT's
never disagree by a token; `CIDSYNC_DICT_BUDGETS` sets others, for example for a participant whose
category DICT gives other limits: `VerifySync=10/50,ListCidSetEvents=20/100` (per minute / bucket size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # every command reads the budgets' setting; only the workers need redis-py (0.2 s to import)
    from cidsync.redis_client import RedisClient

MARGIN = 0.9  # of DICT's bucket size


@dataclass(frozen=True)
class Bucket:
    per_minute: float
    size: float

    @classmethod
    def parse(cls, text: str) -> Bucket:
        """`10/50`: 10 a minute, 50 at most saved up."""
        rate, _, size = text.partition("/")
        try:
            bucket = cls(float(rate), float(size))
        except ValueError:
            raise ValueError(f"a DICT budget is '<per minute>/<bucket size>', not {text!r}") from None
        if bucket.per_minute <= 0 or bucket.size < 1:
            raise ValueError(f"a DICT budget needs a positive rate and a bucket of at least 1, not {text!r}")
        return bucket


# DICT API v2's policies for the calls cidsync makes often and per participant. The CID file's 40 a day
# is DICT's to refuse (the reconciliation waits its retry-after on a durable timer, with the file's
# idempotency key); a file's status (`GetCidSetFile`, 10 a minute) names no participant in our Bridge
# contract yet, so its bucket cannot be kept here (the contract's next version carries it).
DICT_BUCKETS: dict[str, Bucket] = {
    "VerifySync": Bucket(10, 50),
    "ListCidSetEvents": Bucket(20, 100),
    "GetEntryByCid": Bucket(1200, 1200),
}


def parse_budgets(text: str) -> dict[str, Bucket]:
    """DICT's buckets with those of `text` (`Operation=rate/size,...`) in their place."""
    buckets = dict(DICT_BUCKETS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        operation, _, value = item.partition("=")
        if operation not in DICT_BUCKETS:
            raise ValueError(f"no DICT budget is kept for {operation!r}: one of {', '.join(DICT_BUCKETS)}")
        buckets[operation] = Bucket.parse(value)
    return buckets


# One atomic take: refill by the time since the last one (Redis's clock, so every replica agrees), then
# spend a token if one is left above `reserve`. Replies the wait in seconds as a string ("0": taken).
# KEYS[1] the bucket (a hash: tokens, at). ARGV: size, refill per second, reserve.
TAKE = """
local size, refill, reserve = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or size
local at = tonumber(saved[2]) or now
tokens = math.min(size, tokens + math.max(0, now - at) * refill)
local wait = 0
if tokens - 1 >= reserve then
  tokens = tokens - 1
else
  wait = (reserve + 1 - tokens) / refill
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(size / refill) + 60)
return tostring(wait)
"""


class DictBudget:
    """The participant-wide buckets in Redis: `take` before each limited call to DICT."""

    def __init__(self, redis: RedisClient, buckets: Mapping[str, Bucket] | None = None) -> None:
        self.redis = redis
        self.buckets = dict(DICT_BUCKETS if buckets is None else buckets)

    @staticmethod
    def key(participant: str, operation: str) -> str:
        return f"{{dict:{participant}}}:budget:{operation}"

    async def take(self, participant: str, operation: str, reserve: float = 0.0) -> float:
        """0 when a token was taken; else the seconds until one is left above `reserve` (nothing spent)."""
        bucket = self.buckets.get(operation)
        if bucket is None:
            return 0.0
        size = bucket.size * MARGIN
        wait = await self.redis.eval(
            TAKE, 1, self.key(participant, operation), size, bucket.per_minute / 60, min(reserve, size - 1)
        )
        return float(wait)
