"""One run per event: the mark looked up, the run started, the message acked (in that order).

An event whose idempotency mark is in Redis was applied already and is only acked. Otherwise its run is
started under the event's CONSUMER span (so the workflow continues the producer's trace), and the message
is acked only once Temporal has accepted the start. A transient failure goes to the settler, which
redelivers it later. At most `max_in_flight` handlings run at once.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from cidsync.change import CIDChange
from cidsync.entry import KeyType
from cidsync.telemetry import instruments
from starters.consuming import Message, consumer_span
from starters.in_flight import InFlight
from starters.settling import Settler
from starters.workflow_starts import Starts


class EventMarks(Protocol):
    """The store's idempotency marks, as the per-event dispatcher reads them."""

    async def is_marked(self, participant: str, key_type: KeyType, event_id: str) -> bool: ...


class PerEventDispatcher:
    def __init__(
        self, marks: EventMarks, starts: Starts, settler: Settler, in_flight: InFlight, max_in_flight: int
    ) -> None:
        self.marks = marks
        self.starts = starts
        self.settler = settler
        self.in_flight = in_flight
        self._slots = asyncio.Semaphore(max_in_flight)

    async def dispatch(self, message: Message, change: CIDChange) -> None:
        """Hand the event to a task once a slot is free (the wait is the backpressure)."""
        await self.in_flight.spawn(self._slots, self._handle, message, change)

    async def dead_letter(self, message: Message, reason: str, kind: str) -> None:
        """A message that can never succeed, dead-lettered under the same bound as the others."""
        await self.in_flight.spawn(self._slots, self.settler.dead_letter, message, reason, kind)

    async def _handle(self, message: Message, change: CIDChange) -> None:
        stats = self.settler.stats
        with consumer_span(message, change):
            try:
                if await self.marks.is_marked(change.participant, change.key_type, str(change.event_id)):
                    stats.already_marked += 1
                    instruments.events_already_applied.add(1)
                    self.settler.ack(message)
                    return
                await self.starts.start_event(change)  # under the consumer span: the workflow continues it
                self.settler.started()
                self.settler.ack(message)
            except Exception as error:  # the policy decides; nothing is left unsettled
                await self.settler.retry_later(message, error)
