"""How the handling of a message ends: ack, redelivery after a backoff, dead letter, or a halt.

The decision between them is `starters.redelivery` (from the error and the count alone); this carries it
out on the message's own consumer and on the dead-letter topic, and counts it. One settler serves both
dispatchers, so a per-event and a batched message end the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Protocol

from cidsync.telemetry import instruments
from starters.consuming import Message, Receiver, about
from starters.redelivery import (
    INVALID_EVENT,
    REDELIVERIES_EXHAUSTED,
    TRANSIENT,
    Action,
    RedeliveryPolicy,
    dead_letter_properties,
    is_refusal,
)

logger = logging.getLogger("starters.entry_events")  # one logger for the starter's lines, as before

MAX_TRACKED = 100_000  # messages with failures remembered at once (their ids and counts: a few MB at most)


@dataclass
class StarterStats:
    consumed: int = 0
    started: int = 0
    already_started: int = 0
    already_marked: int = 0
    dead_lettered: int = 0
    retried: int = 0
    batches: int = 0

    def line(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())


class DeadLetterNotWritten(ConnectionError):
    """The dead-letter topic did not take a message: it is redelivered, and dead-lettered then."""


class DeadLetterSink(Protocol):
    """The dead-letter topic's producer."""

    async def send(self, content: bytes, *, properties: dict[str, str], partition_key: str | None) -> Any: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class Settler:
    """Ends each message's handling on the consumer it came from (`receivers`, by full topic name)."""

    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        dead_letters: DeadLetterSink,
        policy: RedeliveryPolicy,
        stats: StarterStats,
        *,
        nack_delay: timedelta = timedelta(0),
    ) -> None:
        self.receivers = receivers
        self.dead_letters = dead_letters
        self.policy = policy
        self.stats = stats
        self.nack_delay = nack_delay  # the consumer's own delay between a nack and the redelivery
        self.halted: BaseException | None = None  # set by a refusal no retry can fix: the starter stops
        self._refused_since: float | None = None  # monotonic: the first of the refusals since the last start
        self._failures: OrderedDict[str, int] = OrderedDict()  # by message id, oldest first
        # Each series at 0 from the start: a series born with its first increment is one `increase()` cannot
        # see, and the alerts' "anything new" check is only a fallback for it.
        instruments.events_retried.add(0)
        instruments.events_already_applied.add(0)
        for kind in (INVALID_EVENT, REDELIVERIES_EXHAUSTED):
            instruments.events_dead_lettered.add(0, {"reason": kind})

    def started(self) -> None:
        """Temporal accepted a start: refusals, if it was refusing, have ended."""
        self._refused_since = None

    def ack(self, message: Message) -> None:
        self._failures.pop(_identity(message), None)
        self.receivers[message.topic_name()].acknowledge(message)

    def failures_of(self, message: Message) -> int:
        """How many times this message's own handling failed in this process.

        Not the broker's redelivery count: with producer batching the broker redelivers a whole batch and
        counts per batch, so a message's count grows with every nack of a batch-mate (with a short nack
        delay, ten failures of a batch of ten ran one message's count to ten in one outage). This count is
        the message's own; a restart sets it back to zero, which only ever gives a message more chances."""
        return self._failures.get(_identity(message), 0)

    async def retry_later(self, message: Message, error: BaseException) -> None:
        """Carry out the policy's decision on a message whose handling failed."""
        receiver = self.receivers[message.topic_name()]
        attempts = self.failures_of(message)
        refused = is_refusal(error)
        refused_for = timedelta(0)
        if refused:
            now = time.monotonic()
            if self._refused_since is None:
                self._refused_since = now
            refused_for = timedelta(seconds=now - self._refused_since)
        decision = self.policy.decide(error, attempts, refused_for)
        if decision.action is Action.HALT:
            logger.error(
                "Temporal has refused every start for %.0f s (%s): halting; the message stays in Pulsar",
                refused_for.total_seconds(),
                error,
                extra=about(message),
            )
            self.halted = error
            await receiver.negative_acknowledge(message)
            return
        if decision.action is Action.DEAD_LETTER:
            await self.dead_letter(message, decision.reason, REDELIVERIES_EXHAUSTED)
            return
        if refused:  # not the message's failure: it does not bring its dead letter nearer
            self._redeliver_after(decision.delay, message, attempts, error, refused_for)
            return
        self._redeliver_after(decision.delay, message, attempts + 1, error)

    def _redeliver_after(
        self,
        delay: timedelta,
        message: Message,
        failures: int,
        error: BaseException,
        refused_for: timedelta | None = None,
    ) -> None:
        self._remember(message, failures)
        self.stats.retried += 1
        instruments.events_retried.add(1)
        if refused_for is not None:
            logger.warning(
                "Temporal refused a start (%s), refusing for %.0f s; redelivery in %.1f s (halting if it still "
                "refuses after %.0f s)",
                error,
                refused_for.total_seconds(),
                (delay + self.nack_delay).total_seconds(),
                self.policy.halt_after.total_seconds(),
                extra=about(message),
            )
        else:
            logger.warning(
                "%s (%r); redelivery in %.1f s",
                "transient failure" if isinstance(error, TRANSIENT) else "handling failed",
                error,
                (delay + self.nack_delay).total_seconds(),
                exc_info=None if isinstance(error, TRANSIENT) else error,
                extra=about(message),
            )
        receiver = self.receivers[message.topic_name()]
        # Scheduled, not awaited: the slot is free for other messages meanwhile.
        asyncio.get_running_loop().call_later(
            delay.total_seconds(), lambda: asyncio.ensure_future(receiver.negative_acknowledge(message))
        )

    def _remember(self, message: Message, failures: int) -> None:
        key = _identity(message)
        self._failures[key] = failures
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED:  # messages another consumer took over: forget the oldest
            self._failures.popitem(last=False)

    async def dead_letter(self, message: Message, reason: str, kind: str) -> None:
        """`reason` (the full text) goes with the message; `kind` (a fixed set) labels the metric."""
        properties = dead_letter_properties(
            message.properties(),
            reason=reason,
            kind=kind,
            topic=message.topic_name(),
            message_id=str(message.message_id()),
            redelivery_count=message.redelivery_count(),
        )
        try:
            await self.dead_letters.send(
                message.data(), properties=properties, partition_key=message.partition_key() or None
            )
        except Exception as error:  # e.g. the broker restarting: the send timed out or the producer closed
            # Not acked, and not left alone either: unsettled on a live consumer it would never come back.
            # It is redelivered and dead-lettered again then.
            failures = self.failures_of(message)
            self._redeliver_after(self.policy.backoff(failures), message, failures + 1, DeadLetterNotWritten(error))
            return
        self.stats.dead_lettered += 1
        instruments.events_dead_lettered.add(1, {"reason": kind})
        logger.warning(
            "dead-lettered %s from %s: %s",
            message.message_id(),
            message.topic_name(),
            reason[:300],
            extra=about(message),
        )
        self.ack(message)


def _identity(message: Message) -> str:
    return f"{message.topic_name()}/{message.message_id()}"
