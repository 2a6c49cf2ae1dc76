"""What the starter needs of a received message and of the consumer it came from, and its CONSUMER span.

The protocols are what `cidsync.pulsar_native.BatchConsumer` and `pulsar.Message` provide; stating them
lets the dispatchers and the settler be tested with a fake consumer, without a broker.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from opentelemetry.trace import Span, SpanKind

from cidsync.change import CIDChange
from cidsync.telemetry import tracing


class Message(Protocol):
    """A received Pulsar message, as far as the starter reads it."""

    def data(self) -> bytes: ...
    def properties(self) -> dict[str, str]: ...
    def topic_name(self) -> str: ...
    def message_id(self) -> object: ...
    def redelivery_count(self) -> int: ...
    def partition_key(self) -> str: ...


class Receiver(Protocol):
    """One topic's consumer: batches of messages in, acks and nacks out."""

    topic: str  # the short name, for metric labels

    def connected(self) -> bool: ...
    async def receive(self) -> list[Message]: ...
    def acknowledge(self, message: Message) -> None: ...
    async def negative_acknowledge(self, message: Message) -> None: ...
    async def close(self) -> None: ...


def about(message: Message) -> dict[str, str]:
    """The event id for a JSON log line (the producer's property; absent on a message that is not an event)."""
    event_id = message.properties().get("event_id")
    return {"event_id": event_id} if event_id else {}


def consumer_span(message: Message, change: CIDChange) -> AbstractContextManager[Span | None]:
    """The CONSUMER span of one event, continuing the producer's trace from the `traceparent` property."""
    if not tracing.enabled():
        return nullcontext()
    attributes = {
        **tracing.messaging_attributes("process", message.topic_name()),
        **tracing.event_attributes(
            str(change.event_id), change.event_type.value, str(change.entry_id), change.sequence
        ),
        "cidsync.participant": change.participant,
        "cidsync.key_type": change.key_type.value,
        "cidsync.key_id": change.key_id,
    }
    topic = message.topic_name().rsplit("/", 1)[-1]
    return tracing.span(
        f"process {topic}", kind=SpanKind.CONSUMER, attributes=attributes, parent=tracing.extract(message.properties())
    )
