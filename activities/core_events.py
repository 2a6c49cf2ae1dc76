"""Notifications to core banking on `core-events` (Pulsar): the outbox of repairs, and single notices.

The repair step writes each notification into the run's Redis outbox atomically with the repair itself;
`publish_outbox` drains it: it sends a slice, waits for the broker's acknowledgements, and only then trims
the slice off. A crash in between publishes the slice again, which is harmless: every notification has a
deterministic `event_id` for core to drop duplicates by. So the delivery is at least once and nothing
repaired goes unreported.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import pulsar
import pulsar.asyncio as pulsar_asyncio
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from cidsync.core_events import (
    SCHEMA,
    ApprovalNeeded,
    OutboxRouting,
    ReconciliationCompleted,
    VerificationStale,
)
from cidsync.pulsar_native import producer_connected
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import Scratch
from cidsync.telemetry import tracing
from cidsync.topics import Topics

OUTBOX_SLICE = 500

Notice = Annotated[ReconciliationCompleted | ApprovalNeeded | VerificationStale, Field(discriminator="event_type")]


class NoticeInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    notice: Notice


class CoreEventsPublisher:
    """Built once in the worker: the store (for the outbox) and one producer for `core-events`, made up front."""

    def __init__(self, store: CIDStore, producer: pulsar_asyncio.Producer) -> None:
        self.store = store
        self.producer = producer

    @classmethod
    async def create(cls, store: CIDStore, client: pulsar_asyncio.Client, topics: Topics) -> CoreEventsPublisher:
        producer = await client.create_producer(
            topics.full(topics.core_events),
            send_timeout_millis=30_000,
            compression_type=pulsar.CompressionType.LZ4,
            batching_enabled=True,
            batching_max_publish_delay_ms=10,
        )
        return cls(store, producer)

    async def close(self) -> None:
        await self.producer.close()

    async def check_connected(self) -> None:
        """Readiness: the producer holds a live connection to the broker."""
        if not producer_connected(self.producer):
            raise ConnectionError("not connected to the Pulsar broker")

    async def _send(
        self, payload: bytes, partition_key: str, event_type: str, event_id: str, schema: str = SCHEMA
    ) -> None:
        attributes = {
            **tracing.messaging_attributes("send", self.producer.topic()),
            "cidsync.event_type": event_type,
            "cidsync.event_id": event_id,
        }
        with tracing.span("send core-events", kind=SpanKind.PRODUCER, attributes=attributes):
            properties = {"schema": schema, "event_type": event_type, "event_id": event_id}
            await self.producer.send(payload, partition_key=partition_key, properties=dict(tracing.inject(properties)))

    @activity.defn(name="publish_outbox")
    async def publish_outbox(self, scratch: Scratch) -> int:
        published = 0
        while payloads := await self.store.outbox.oldest(scratch, OUTBOX_SLICE):
            # Sent as written by the repair (by this version or an earlier one); read for routing only.
            events = [(item, OutboxRouting.model_validate_json(item)) for item in payloads]
            await asyncio.gather(
                *(
                    self._send(item, e.partition_key, e.event_type.value, str(e.event_id), e.schema_)
                    for item, e in events
                )
            )
            await self.store.outbox.trim(scratch, len(payloads))
            published += len(payloads)
            activity.heartbeat(published)
        return published

    @activity.defn(name="publish_notice")
    async def publish_notice(self, request: NoticeInput) -> None:
        notice = request.notice
        await self._send(notice.to_json().encode(), notice.partition_key, notice.event_type.value, str(notice.event_id))
