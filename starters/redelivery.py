"""What the starter does with a message whose handling failed: the one dead-letter and redelivery policy.

Three answers, decided from the error and the message's redelivery count alone (so it is tested without a
broker): a refusal by Temporal that no retry can fix halts the starter and leaves the message in Pulsar
(an unknown search attribute, a missing namespace, no permission: dead-lettering would throw valid events
away); a transient failure is redelivered after a backoff that doubles with each redelivery; and after
`max_redeliveries` the message is dead-lettered with the last error. An event that breaks the contract
never gets here: it is dead-lettered at once (it can never succeed).

Dead-lettering after N redeliveries is decided here rather than by the client's dead-letter policy, on
purpose: with producer batching, a nack redelivers the whole batch (docs/stack.md), so a valid message
inherits the redelivery count of a failing batch-mate, and the client's policy would dead-letter it
unprocessed. Here each message is processed before its count is looked at.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from redis.exceptions import RedisError
from temporalio.service import RPCError, RPCStatusCode

TRANSIENT = (RPCError, RedisError, ConnectionError, TimeoutError, asyncio.TimeoutError)
# Temporal answers that may pass by themselves; any other refusal halts the starter.
TRANSIENT_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
    }
)
# The dead-letter metric's `reason` label: a fixed set.
INVALID_EVENT = "invalid_event"
REDELIVERIES_EXHAUSTED = "redeliveries_exhausted"


class Action(Enum):
    HALT = "halt"
    REDELIVER = "redeliver"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: timedelta = timedelta(0)  # before the redelivery
    reason: str = ""  # what goes with a dead letter


@dataclass(frozen=True)
class RedeliveryPolicy:
    max_redeliveries: int
    backoff_base: timedelta
    backoff_max: timedelta

    def decide(self, error: BaseException, redelivery_count: int) -> Decision:
        if isinstance(error, RPCError) and error.status not in TRANSIENT_RPC:
            return Decision(Action.HALT)
        if redelivery_count >= self.max_redeliveries:
            return Decision(Action.DEAD_LETTER, reason=f"gave up after {redelivery_count} redeliveries: {error!r}")
        return Decision(Action.REDELIVER, delay=min(self.backoff_max, self.backoff_base * (2**redelivery_count)))


def dead_letter_properties(
    properties: dict[str, str], *, reason: str, kind: str, topic: str, message_id: str, redelivery_count: int
) -> dict[str, str]:
    """A dead letter's properties: the original ones, and why, from where, after how many redeliveries."""
    return {
        **properties,
        "reason": reason[:2000],
        "original_topic": topic,
        "original_message_id": message_id,
        "redelivery_count": str(redelivery_count),
        "dead_lettered_at": datetime.now(UTC).isoformat(),
        "kind": kind,
    }
