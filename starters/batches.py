"""Many events to one run: batches cut by size or by age, their marks looked up in one round trip.

A batch goes when it holds `batch_max_events` or when its own timer, started with its first event, says
it is due (a batch with nothing after it must not wait for the next message, possibly hours later). Its
start runs as a task holding one of `batches_in_flight` slots; meanwhile the receive loops fill the next
batch. The events already marked applied are dropped (one pipelined look-up, just before the start), one
run is started for the rest, and then every message is acked; on a transient failure none is, and each
goes to the settler.

Traced, a batch is a trace of its own whose root links to each event's CONSUMER span (OpenTelemetry's
messaging conventions for batch processing): one run serves events of many traces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from opentelemetry.trace import Link, SpanKind

from cidsync.change import CIDChange
from cidsync.telemetry import instruments, tracing
from starters.consuming import Message, consumer_span
from starters.in_flight import InFlight
from starters.options import StarterConfig
from starters.settling import Settler
from starters.workflow_starts import Starts

Batched = tuple[Message, CIDChange, Link | None]  # the link: to the event's consumer span, if traced


class BatchMarks(Protocol):
    """The store's idempotency marks, as the batch dispatcher reads them."""

    async def marked(self, changes: Sequence[CIDChange]) -> list[bool]: ...


class BatchDispatcher:
    def __init__(
        self, marks: BatchMarks, starts: Starts, settler: Settler, in_flight: InFlight, config: StarterConfig
    ) -> None:
        self.marks = marks
        self.starts = starts
        self.settler = settler
        self.in_flight = in_flight
        self.max_events = config.batch_max_events
        self.max_wait = config.batch_max_wait.total_seconds()
        self._slots = asyncio.Semaphore(config.batches_in_flight)
        self._batch: list[Batched] = []
        self._generation = 0
        self._timer: asyncio.Task[None] | None = None

    async def add(self, message: Message, change: CIDChange) -> None:
        if not self._batch:
            self._generation += 1
            self._timer = asyncio.ensure_future(self._send_when_due(self._generation))
        link: Link | None = None
        with consumer_span(message, change) as span:
            if span is not None:
                link = Link(span.get_span_context())
        self._batch.append((message, change, link))
        if len(self._batch) >= self.max_events:
            await self._send()

    async def flush(self) -> None:
        """On stop: the batch being filled goes now."""
        if self._timer is not None:
            self._timer.cancel()
        if self._batch:
            await self._send()

    async def _send(self) -> None:
        """The batch is taken before the wait for a slot: the other topics' loops fill a new one meanwhile."""
        batch, self._batch = self._batch, []
        await self.in_flight.spawn(self._slots, self._start, batch)

    async def _send_when_due(self, generation: int) -> None:
        await asyncio.sleep(self.max_wait)
        if self._batch and self._generation == generation:  # else it filled up and went already
            await self._send()

    async def _start(self, batch: list[Batched]) -> None:
        links = [link for _, _, link in batch if link is not None]
        with tracing.span(
            "start batch", kind=SpanKind.PRODUCER, links=links, attributes={"messaging.batch.message_count": len(batch)}
        ):
            try:
                marked = await self.marks.marked([change for _, change, _ in batch])
                changes = [change for (_, change, _), done in zip(batch, marked, strict=True) if not done]
                if changes:
                    await self.starts.start_batch(changes)
                    self.settler.started()
            except Exception as error:  # the policy decides; nothing is left unsettled
                for message, _, _ in batch:
                    await self.settler.retry_later(message, error)
                return
        self.settler.stats.already_marked += sum(marked)
        instruments.events_already_applied.add(sum(marked))
        for message, _, _ in batch:
            self.settler.ack(message)
