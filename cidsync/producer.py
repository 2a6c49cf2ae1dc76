"""`EntryEventProducer`: how core banking (and our demo, load tests and tests) publishes entry events.

Guarantees, and why:
- Nothing invalid leaves: the event is built and validated before any send, so an invalid entry
  raises `InvalidInput` and publishes nothing.
- Per-entry order: the partition key is the entry id, so each entry's events stay on one partition, in
  order. Consumers still order by `sequence` (docs/design.md §2), which survives retries and reordering.
- No silent failure: a failed send is retried (1 s, 2 s, 4 s by default); after that the event goes to
  the dead-letter topic with the error in its properties, and the caller gets `PublishFailed` either
  way. Delivery is at least once: a retry after a lost acknowledgement can duplicate a message, which
  the consumer's deterministic workflow ids and versioned apply absorb (docs/design.md §4).
- Only what the broker acknowledged counts as sent, in the metrics and in `stats`.

Personal data (the key, names, tax ids) never reaches logs, metrics or message properties.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import _pulsar
import pulsar
import pulsar.asyncio as pulsar_asyncio
from opentelemetry import metrics
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from cidsync.entry import Entry
from cidsync.errors import InvalidInput, Problem
from cidsync.events import SCHEMA_V1, WRITABLE_SCHEMAS, DeletionType, EntryEvent, EventType, parse_event
from cidsync.pulsar_client import pulsar_client
from cidsync.pulsar_native import public_message_id, send_async
from cidsync.telemetry import tracing
from cidsync.topics import Topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProducerConfig:
    """The default favours throughput: batches of at most 100 messages or 10 ms, LZ4."""

    batching: bool = True
    batching_max_messages: int = 100
    batching_max_publish_delay_ms: int = 10
    compression: bool = True  # LZ4
    send_timeout_ms: int = 30_000
    retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
    dead_letter_send_timeout_ms: int = 30_000
    max_in_flight: int = 1_000
    # One batch per partition key (the entry): Apache Pulsar's Key_Shared dispatches a batch whole, by its
    # first message's key, so a default batch of several entries reaches the consumer of one of them.
    # Its cost in throughput is measured by `bench/producer_batching.py` (README, "Pulsar").
    key_based_batching: bool = True
    # The entry-event version written (cidsync.events says how versions evolve): one this release can write.
    schema: str = SCHEMA_V1

    def __post_init__(self) -> None:
        if self.schema not in WRITABLE_SCHEMAS:
            raise InvalidInput(
                "ProducerConfig",
                [Problem("schema", f"this release writes {', '.join(WRITABLE_SCHEMAS)}, not {self.schema}")],
            )

    @classmethod
    def low_latency(cls, **changes: Any) -> ProducerConfig:
        """No batching: each message leaves at once (p99 well under a millisecond on loopback)."""
        return replace(cls(batching=False), **changes)


@dataclass(frozen=True)
class Published:
    message_id: str
    topic: str
    event_id: uuid.UUID
    sequence: int
    latency_ms: float


class PublishFailed(Exception):
    """The event was not published. `dead_lettered` says whether it reached the dead-letter topic."""

    def __init__(
        self, event: EntryEvent, topic: str, attempts: int, error: Exception, dead_letter_error: Exception | None
    ) -> None:
        self.event_id = event.event_id
        self.entry_id = event.entry.id
        self.topic = topic
        self.attempts = attempts
        self.error = error
        self.dead_lettered = dead_letter_error is None
        self.dead_letter_error = dead_letter_error
        where = (
            "it was sent to the dead-letter topic"
            if self.dead_lettered
            else f"the dead-letter topic was unreachable too ({dead_letter_error}): the event is NOT stored anywhere"
        )
        super().__init__(
            f"event {event.event_id} of entry {event.entry.id} was not published to {topic} after "
            f"{attempts} attempts ({error}); {where}"
        )


class SequenceClock:
    """Strictly increasing sequences from the wall clock in nanoseconds.

    docs/design.md §2: `sequence` increases strictly for each key over its whole life. Core banking should
    pass its own commit sequence; this default keeps one producer strictly increasing and, being
    time-based, orders events of producers whose clocks agree.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_SEQUENCES = SequenceClock()


def build_event(
    event_type: EventType,
    entry: Entry | Mapping[str, Any],
    user_id: str,
    *,
    deletion_type: DeletionType | None = None,
    sequence: int | None = None,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    sequences: SequenceClock = _SEQUENCES,
    schema: str = SCHEMA_V1,
) -> EntryEvent:
    """A v1 event, validated; raises `InvalidInput` (and so sends nothing) when anything is wrong.

    An `Entry` is valid by construction (frozen, validated when made), so it is embedded as it is; a
    mapping is validated in full with the rest of the event.
    """
    return parse_event(
        {
            "schema": schema,
            "event_id": event_id or uuid.uuid4(),
            "event_type": event_type,
            "occurred_at": occurred_at or datetime.now(UTC),
            "sequence": sequence if sequence is not None else sequences.next(),
            "deletion_type": deletion_type,
            "user_id": user_id,
            "entry": entry if isinstance(entry, Entry) else dict(entry),
        }
    )


def _properties(event: EntryEvent) -> dict[str, str]:
    """What consumers can route and count by without parsing the payload; never personal data."""
    return {
        "schema": event.schema_,
        "event_type": event.event_type.value,
        "event_id": str(event.event_id),
        "sequence": str(event.sequence),
    }


def _send_span(event: EntryEvent, topic: str) -> Span | None:
    """The PRODUCER span of one event, child of the caller's current span (core's own trace, if any).
    Its context travels in the message's `traceparent` property; the starter continues it."""
    if not tracing.enabled():  # the attributes alone cost a tenth of a bulk send
        return None
    attributes = {
        **tracing.messaging_attributes("send", topic),
        **tracing.event_attributes(str(event.event_id), event.event_type.value, str(event.entry.id), event.sequence),
    }
    return tracing.start_span(f"send {topic.rsplit('/', 1)[-1]}", kind=SpanKind.PRODUCER, attributes=attributes)


def _end_send_span(span: Span | None, error: Exception | None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


@dataclass
class ProducerStats:
    sent: int = 0
    failed: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class _Instruments:
    def __init__(self, provider: metrics.MeterProvider | None) -> None:
        meter = (provider or metrics.get_meter_provider()).get_meter("cidsync.producer")
        self.latency = meter.create_histogram(
            "cidsync.producer.send.latency", unit="ms", description="from send to the broker's acknowledgement"
        )
        self.sent = meter.create_counter("cidsync.producer.messages.sent", description="acknowledged by the broker")
        self.errors = meter.create_counter("cidsync.producer.errors", description="failed send attempts, by type")
        self.dead_lettered = meter.create_counter("cidsync.producer.messages.dead_lettered")
        self.batch_size = meter.create_histogram(
            "cidsync.producer.batch.size", description="messages per broker entry (1 without batching)"
        )


class _BatchSizes:
    """Messages of one batch share a (ledger, entry) id and complete in order: count runs of them."""

    def __init__(self, record: Any) -> None:
        self._record = record
        self._current: dict[str, tuple[tuple[int, int], int]] = {}

    def add(self, topic: str, message_id: pulsar.MessageId) -> None:
        key = (message_id.ledger_id(), message_id.entry_id())
        previous = self._current.get(topic)
        if previous is not None and previous[0] == key:
            self._current[topic] = (key, previous[1] + 1)
            return
        if previous is not None:
            self._record(previous[1], {"topic": topic})
        self._current[topic] = (key, 1)

    def flush(self) -> None:
        for topic, (_, count) in self._current.items():
            self._record(count, {"topic": topic})
        self._current.clear()


class EntryEventProducer:
    def __init__(
        self,
        client: pulsar_asyncio.Client,
        *,
        topics: Topics | None = None,
        config: ProducerConfig | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        sequences: SequenceClock | None = None,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.topics = topics or Topics()
        self.config = config or ProducerConfig()
        self.stats = ProducerStats()
        self._sequences = sequences or SequenceClock()
        self._owns_client = owns_client
        self._producers: dict[str, pulsar_asyncio.Producer] = {}
        self._in_flight = asyncio.Semaphore(self.config.max_in_flight)
        self._metrics = _Instruments(meter_provider)
        self._batches = _BatchSizes(self._metrics.batch_size.record)

    @classmethod
    async def connect(
        cls,
        service_url: str,
        *,
        topics: Topics | None = None,
        config: ProducerConfig | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> EntryEventProducer:
        """A producer with its own client and one producer per topic, created now.

        The dead-letter producer is created up front too: when the broker is gone is exactly when it
        is needed, and a producer cannot be created then.
        """
        client = pulsar_client(service_url, **dict(client_options or {}))
        self = cls(client, topics=topics, config=config, meter_provider=meter_provider, owns_client=True)
        try:
            await self.start()
        except BaseException:
            await client.close()
            raise
        return self

    async def start(self) -> None:
        c = self.config
        for topic in self.topics.entry_topics():
            self._producers[topic] = await self.client.create_producer(
                topic,
                send_timeout_millis=c.send_timeout_ms,
                compression_type=pulsar.CompressionType.LZ4 if c.compression else pulsar.CompressionType.NONE,
                batching_enabled=c.batching,
                batching_type=pulsar.BatchingType.KeyBased if c.key_based_batching else pulsar.BatchingType.Default,
                batching_max_messages=c.batching_max_messages,
                batching_max_publish_delay_ms=c.batching_max_publish_delay_ms,
                max_pending_messages=c.max_in_flight,
            )
        # One message per entry in the dead-letter topic, so each can be inspected and replayed alone.
        self._producers[self.topics.dead_letter_topic] = await self.client.create_producer(
            self.topics.dead_letter_topic, send_timeout_millis=c.dead_letter_send_timeout_ms, batching_enabled=False
        )

    async def __aenter__(self) -> EntryEventProducer:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    # --- the publishing API ---------------------------------------------------------------------------

    async def publish_created(self, entry: Entry | Mapping[str, Any], user_id: str, **options: Any) -> Published:
        return await self.publish_event(self.build(EventType.CREATED, entry, user_id, **options))

    async def publish_updated(self, entry: Entry | Mapping[str, Any], user_id: str, **options: Any) -> Published:
        return await self.publish_event(self.build(EventType.UPDATED, entry, user_id, **options))

    async def publish_deleted_immediate(
        self, entry: Entry | Mapping[str, Any], user_id: str, **options: Any
    ) -> Published:
        return await self.publish_deleted(entry, DeletionType.IMMEDIATE, user_id, **options)

    async def publish_deleted(
        self, entry: Entry | Mapping[str, Any], deletion_type: DeletionType, user_id: str, **options: Any
    ) -> Published:
        """A delete; WAITING_PERIOD goes to its own topic (DICT's 30-day wait happens downstream)."""
        return await self.publish_event(
            self.build(EventType.DELETED, entry, user_id, deletion_type=deletion_type, **options)
        )

    def build(
        self, event_type: EventType, entry: Entry | Mapping[str, Any], user_id: str, **options: Any
    ) -> EntryEvent:
        """`build_event` with this producer's sequence clock."""
        options.setdefault("sequences", self._sequences)
        return build_event(event_type, entry, user_id, schema=self.config.schema, **options)

    async def publish_event(self, event: EntryEvent) -> Published:
        """Publish a ready v1 event (e.g. read from a file) to the topic its type selects."""
        topic = self.topics.for_event(event)
        payload = event.to_json().encode("utf-8")
        span = _send_span(event, topic)
        properties = dict(tracing.inject_span(span, _properties(event)))
        attempts = 0
        last_error: Exception | None = None
        failure: PublishFailed | None = None
        try:
            async with self._in_flight:
                for delay in (0.0, *self.config.retry_delays):
                    if delay:
                        await asyncio.sleep(delay)
                    attempts += 1
                    started = time.perf_counter()
                    try:
                        message_id = await self._producers[topic].send(
                            payload,
                            properties=properties,
                            partition_key=str(event.entry.id),
                            event_timestamp=int(event.occurred_at.timestamp() * 1000),
                        )
                    except pulsar_asyncio.PulsarException as error:
                        last_error = error
                        self._count_error(topic, error)
                        continue
                    latency_ms = (time.perf_counter() - started) * 1000
                    return self._acknowledged(event, topic, message_id, latency_ms)
                assert last_error is not None
                dead_letter_error = await self._dead_letter(payload, properties, event, topic, attempts, last_error)
            self.stats.failed += 1
            failure = PublishFailed(event, topic, attempts, last_error, dead_letter_error)
            raise failure
        finally:
            _end_send_span(span, failure)

    async def publish_events(self, events: Sequence[EntryEvent]) -> list[Published | PublishFailed]:
        """Publish many ready events; the outcome of each, in order. For bulk loads and backfills.

        The same guarantees as `publish_event` (an event the broker refuses is retried, then dead-lettered),
        at a fraction of the cost per event: up to `max_in_flight` events are queued at once, and all
        their acknowledgements complete in one wake-up of the event loop, where `publish_event` costs a
        wake-up each (`cidsync.pulsar_native`). Events refused in the first pass go through
        `publish_event` one by one.
        """
        outcomes: list[Published | PublishFailed | None] = [None] * len(events)
        retry: list[int] = []
        size = self.config.max_in_flight
        for start in range(0, len(events), size):
            chunk = range(start, min(start + size, len(events)))
            answers = await self._send_all([events[i] for i in chunk])
            for index, (topic, result, native_id, latency_ms) in zip(chunk, answers, strict=True):
                if result == _pulsar.Result.Ok:
                    outcomes[index] = self._acknowledged(events[index], topic, public_message_id(native_id), latency_ms)
                else:
                    self._count_error(topic, pulsar_asyncio.PulsarException(result))
                    retry.append(index)
        for index in retry:
            try:
                outcomes[index] = await self.publish_event(events[index])
            except PublishFailed as failed:
                outcomes[index] = failed
        return [outcome for outcome in outcomes if outcome is not None]

    async def _send_all(self, events: Sequence[EntryEvent]) -> list[tuple[str, _pulsar.Result, object, float]]:
        """Queue every event at once; return when the broker has answered for all of them."""
        loop = asyncio.get_running_loop()
        all_answered: asyncio.Future[None] = loop.create_future()
        answers: list[tuple[str, _pulsar.Result, object, float]] = [("", _pulsar.Result.Ok, None, 0.0)] * len(events)
        remaining = [len(events)]
        lock = threading.Lock()

        def answered(
            index: int, topic: str, sent: float, span: Span | None, result: _pulsar.Result, native_id: object
        ) -> None:
            answers[index] = (topic, result, native_id, (time.perf_counter() - sent) * 1000)
            # A refused send is retried through publish_event, under a span of its own.
            _end_send_span(span, None if result == _pulsar.Result.Ok else pulsar_asyncio.PulsarException(result))
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                loop.call_soon_threadsafe(finish)

        def finish() -> None:
            if not all_answered.done():  # its caller may have been cancelled
                all_answered.set_result(None)

        async with self._in_flight_all():
            for index, event in enumerate(events):
                topic = self.topics.for_event(event)
                sent = time.perf_counter()
                span = _send_span(event, topic)
                properties = dict(tracing.inject_span(span, _properties(event)))
                send_async(
                    self._producers[topic],
                    event.to_json().encode("utf-8"),
                    properties=properties,
                    partition_key=str(event.entry.id),
                    event_timestamp=int(event.occurred_at.timestamp() * 1000),
                    callback=functools.partial(answered, index, topic, sent, span),
                )
            await all_answered
        return answers

    @contextlib.asynccontextmanager
    async def _in_flight_all(self) -> AsyncIterator[None]:
        """Every in-flight slot, so a bulk chunk never overfills the producers' pending queues."""
        taken = 0
        try:
            for _ in range(self.config.max_in_flight):
                await self._in_flight.acquire()
                taken += 1
            yield
        finally:
            for _ in range(taken):
                self._in_flight.release()

    async def flush(self) -> None:
        await asyncio.gather(*(producer.flush() for producer in self._producers.values()))
        self._batches.flush()

    async def close(self) -> None:
        """Flush first, so nothing accepted is dropped, then close the producers (and our client)."""
        try:
            await self.flush()
        finally:
            for producer in self._producers.values():
                try:
                    await producer.close()
                except pulsar_asyncio.PulsarException as error:
                    logger.warning("closing the producer of %s failed: %s", producer.topic(), error)
            self._producers.clear()
            if self._owns_client:
                await self.client.close()

    # --- internals ------------------------------------------------------------------------------------

    def _acknowledged(
        self, event: EntryEvent, topic: str, message_id: pulsar.MessageId, latency_ms: float
    ) -> Published:
        attributes = {"topic": topic}
        self.stats.sent += 1
        self._metrics.sent.add(1, attributes)
        self._metrics.latency.record(latency_ms, attributes)
        self._batches.add(topic, message_id)
        logger.debug(
            "published event %s of entry %s to %s as %s in %.1f ms",
            event.event_id,
            event.entry.id,
            topic,
            message_id,
            latency_ms,
        )
        return Published(str(message_id), topic, event.event_id, event.sequence, latency_ms)

    def _count_error(self, topic: str, error: pulsar_asyncio.PulsarException) -> None:
        kind = error.error().name
        self.stats.failed_attempts += 1
        self.stats.errors[kind] += 1
        self._metrics.errors.add(1, {"topic": topic, "error": kind})
        logger.warning("sending to %s failed (%s); will retry if attempts remain", topic, kind)

    async def _dead_letter(
        self,
        payload: bytes,
        properties: dict[str, str],
        event: EntryEvent,
        topic: str,
        attempts: int,
        error: Exception,
    ) -> Exception | None:
        """Send the event, as it is, to the dead-letter topic; return the error if that failed too."""
        reason = {
            "error": str(error),
            "error_type": type(error).__name__,
            "original_topic": topic,
            "attempts": str(attempts),
            "failed_at": datetime.now(UTC).isoformat(),
        }
        try:
            await self._producers[self.topics.dead_letter_topic].send(
                payload, properties={**properties, **reason}, partition_key=str(event.entry.id)
            )
        except pulsar_asyncio.PulsarException as unreachable:
            logger.error("event %s was lost: the dead-letter topic is unreachable too", event.event_id)
            lost: Exception = unreachable
            return lost
        self.stats.dead_lettered += 1
        self._metrics.dead_lettered.add(1, {"topic": topic})
        logger.error("event %s dead-lettered after %d attempts to %s", event.event_id, attempts, topic)
        return None
