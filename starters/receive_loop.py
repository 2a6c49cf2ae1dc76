"""The starter's receive loop: messages in, each to its dispatcher, until a stop; then the drain.

One loop per topic's consumer. Each receive hands over what has arrived (`Receiver.receive`: a batch per
wake-up of the event loop); each message is parsed inline (pure CPU, and a task per message cost more
than the parse itself) and becomes its minimal change (`cidsync.change.CIDChange.of_event`): the entry, with
its personal data, goes no further than this process's memory. A message that does not parse or breaks
the contract is dead-lettered at once (it can never succeed); a change goes to the batch dispatcher in
batch mode (but a WAITING_PERIOD delete, which waits 30 days in a run of its own), else to the per-event
dispatcher.

On stop (or a halt) the loops end after their current receive, whose messages are handled or left unacked;
the batch being filled goes, and what is under way finishes. A halt is raised after the drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from cidsync.change import CIDChange
from cidsync.errors import InvalidInput
from cidsync.events import DeletionType, parse_event_json
from cidsync.telemetry import instruments
from starters.batches import BatchDispatcher, BatchMarks
from starters.consuming import Message, Receiver
from starters.in_flight import InFlight
from starters.options import Mode, StarterConfig
from starters.per_event import EventMarks, PerEventDispatcher
from starters.redelivery import INVALID_EVENT
from starters.settling import Settler
from starters.workflow_starts import Starts

logger = logging.getLogger("starters.entry_events")

DRAIN_TIMEOUT = 30.0  # seconds a stop waits for the handlings under way


class Marks(EventMarks, BatchMarks, Protocol):
    """The store's idempotency marks (`cidsync.store.ingestion.Ingestion`)."""


class StarterHalted(RuntimeError):
    """Temporal refused a start for a reason no retry can fix; the messages are left in Pulsar."""


class ReceiveLoop:
    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        settler: Settler,
        marks: Marks,
        starts: Starts,
        key_secret: bytes,
        config: StarterConfig,
    ) -> None:
        self.receivers = receivers
        self.settler = settler
        self.key_secret = key_secret
        self.in_flight = InFlight()
        self.per_event = PerEventDispatcher(marks, starts, settler, self.in_flight, config.max_in_flight)
        self.batches = (
            BatchDispatcher(marks, starts, settler, self.in_flight, config) if config.mode is Mode.BATCH else None
        )

    async def run(self, stop: asyncio.Event) -> None:
        loops = [asyncio.ensure_future(self._receive_from(r, stop)) for r in self.receivers.values()]
        try:
            # Until stop (or a halt) ends every loop; a loop that fails unexpectedly ends them all.
            await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for loop in loops:
                loop.cancel()  # a receive under way finishes in its thread; what it got stays unacked
            await asyncio.gather(*loops, return_exceptions=True)
            if self.batches is not None:
                await self.batches.flush()
            await self.in_flight.finish(DRAIN_TIMEOUT)
        for loop in loops:
            if not loop.cancelled() and (error := loop.exception()) is not None:
                raise error
        if (halted := self.settler.halted) is not None:
            raise StarterHalted(f"Temporal refused to start workflows: {halted}") from halted

    async def _receive_from(self, receiver: Receiver, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.settler.halted is None:
            try:
                messages = await receiver.receive()
            except ConnectionError as error:  # `ReceiveFailed` from the client
                logger.warning("receive failed (%s); the client reconnects by itself", error)
                await asyncio.sleep(0.5)
                continue
            if messages:
                self.settler.stats.consumed += len(messages)
                instruments.events_consumed.add(len(messages), {"topic": receiver.topic})
            for message in messages:
                await self._accept(message)

    async def _accept(self, message: Message) -> None:
        """Turn one received message into its change and pass it on; waits only for a free slot."""
        try:
            change = CIDChange.of_event(parse_event_json(message.data()), self.key_secret)
        except InvalidInput as error:
            await self.per_event.dead_letter(message, error.summary(), INVALID_EVENT)
            return
        if self.batches is not None and change.deletion_type is not DeletionType.WAITING_PERIOD:
            await self.batches.add(message, change)  # its mark is checked with the whole batch's
            return
        await self.per_event.dispatch(message, change)
