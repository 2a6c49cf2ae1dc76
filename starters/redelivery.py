"""What the starter does with a message whose handling failed: the one dead-letter and redelivery policy.

Three answers, decided from the error, the number of times the message's own handling failed and how long
Temporal has been refusing, so it is tested without a broker: a refusal by Temporal that no retry can fix
halts the starter and leaves the message in Pulsar (an unknown search attribute, a missing namespace, no
permission: dead-lettering would throw valid events away), once refusals have lasted `halt_after` with no
start accepted in between; until then the message is redelivered without counting as a failure, because
the same answers come for a moment from a Temporal that has just restarted ("Namespace default is not
found" for a few seconds, while its namespace cache fills); a transient failure is redelivered after a
backoff that doubles with each failure; and after `max_redeliveries` failures the message is dead-lettered
with the last error. An event that breaks the contract never gets here: it is dead-lettered at once (it
can never succeed).

The failures are counted by the settler, per message, and not read from the broker's redelivery count:
with producer batching a nack redelivers the whole batch (docs/stack.md) and the broker counts per batch,
so a message's count grows with each nack of a batch-mate, and the client's own dead-letter policy would
dead-letter a valid message unprocessed. The settler nacks once the backoff has passed; the consumer then
redelivers after its own negative-ack delay (`StarterConfig.nack_delay`), which the log line adds in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from redis.exceptions import RedisError
from temporalio.service import RPCError, RPCStatusCode

# Failures expected to pass by themselves (logged as transient). Any other error is redelivered under the
# same policy (logged with its traceback): a message whose handling raised must never stay unsettled on a
# live consumer, which no broker redelivers; a bug then ends in a dead letter carrying the error.
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


def is_refusal(error: BaseException) -> bool:
    """Temporal answered, and refused: not an outage, a reason (a missing namespace, an unknown search
    attribute, no permission)."""
    return isinstance(error, RPCError) and error.status not in TRANSIENT_RPC


@dataclass(frozen=True)
class RedeliveryPolicy:
    max_redeliveries: int
    backoff_base: timedelta
    backoff_max: timedelta
    halt_after: timedelta = timedelta(seconds=60)

    def decide(self, error: BaseException, failures: int, refused_for: timedelta = timedelta(0)) -> Decision:
        """`failures`: how often this message's handling failed before (not counting this one).
        `refused_for`: how long Temporal has refused every start, when `error` is a refusal."""
        if is_refusal(error):
            if refused_for >= self.halt_after:
                return Decision(Action.HALT)
            return Decision(Action.REDELIVER, delay=self.backoff(failures))
        if failures >= self.max_redeliveries:
            return Decision(Action.DEAD_LETTER, reason=f"gave up after {failures} redeliveries: {error!r}")
        return Decision(Action.REDELIVER, delay=self.backoff(failures))

    def backoff(self, failures: int) -> timedelta:
        """The wait before a redelivery: doubles with each failure, up to `backoff_max`."""
        return min(self.backoff_max, self.backoff_base * (1 << min(failures, 32)))  # capped: no overflow


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
