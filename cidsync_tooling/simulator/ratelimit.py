"""DICT's token buckets (docs/design.md §1), per participant and operation, with a time scale.

`time_scale` speeds the simulated clock: at 1440 a simulated day passes in a minute, so the 40-a-day
CID file quota can be exercised in a test. Retry-after is reported in real (scaled) seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketPolicy:
    capacity: float
    refill_per_second: float

    @classmethod
    def per_minute(cls, rate: float, capacity: float) -> BucketPolicy:
        return cls(capacity, rate / 60)

    @classmethod
    def per_day(cls, rate: float, capacity: float) -> BucketPolicy:
        return cls(capacity, rate / 86_400)


# DICT's published policies. Where docs/design.md gives no bucket size, one of five minutes' worth is used
# for status and events and one minute's worth for entry by CID.
DICT_POLICIES: dict[str, BucketPolicy] = {
    "VerifySync": BucketPolicy.per_minute(10, capacity=50),
    "CreateCidSetFile": BucketPolicy.per_day(40, capacity=200),
    "GetCidSetFile": BucketPolicy.per_minute(10, capacity=50),
    "ListCidSetEvents": BucketPolicy.per_minute(20, capacity=100),
    "GetEntryByCid": BucketPolicy.per_minute(1200, capacity=1200),
}


class TokenBucket:
    def __init__(self, policy: BucketPolicy, now: float) -> None:
        self.policy = policy
        self.tokens = policy.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.policy.capacity, self.tokens + elapsed * self.policy.refill_per_second)
        self.updated = now

    def take(self, now: float) -> float | None:
        """Spend one token: None if there was one, else the simulated seconds until there is."""
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.policy.refill_per_second


class RateLimiter:
    def __init__(
        self,
        policies: dict[str, BucketPolicy] | None = None,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.policies = DICT_POLICIES if policies is None else policies
        self.time_scale = time_scale
        self.clock = clock
        self.enabled = enabled
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, participant: str, method: str) -> float | None:
        """None when the call may go on, else the real seconds the caller should wait."""
        policy = self.policies.get(method)
        if not self.enabled or policy is None:
            return None
        now = self.clock() * self.time_scale
        bucket = self._buckets.get((participant, method))
        if bucket is None:
            bucket = self._buckets[(participant, method)] = TokenBucket(policy, now)
        wait = bucket.take(now)
        return None if wait is None else wait / self.time_scale

    def state(self, participant: str, method: str) -> tuple[int, BucketPolicy] | None:
        """The whole tokens in the participant's bucket for `method` now, and its policy (None: unlimited)."""
        policy = self.policies.get(method)
        if not self.enabled or policy is None:
            return None
        bucket = self._buckets.get((participant, method))
        if bucket is None:
            return int(policy.capacity), policy
        bucket.refill(self.clock() * self.time_scale)
        return int(bucket.tokens), policy

    def reset(self) -> None:
        self._buckets.clear()
