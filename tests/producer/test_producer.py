"""`EntryEventProducer` against a real pulsar-lite broker."""

import asyncio
import itertools
import json
import random
import uuid
from typing import Any

import pulsar.asyncio as pulsar_asyncio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cidsync.entry import Entry
from cidsync.errors import InvalidInput
from cidsync.events import DeletionType, EventType, parse_event_json
from cidsync.producer import EntryEventProducer, ProducerConfig
from cidsync_tooling.synthetic import synthetic_entry
from tests.helpers.servers import PulsarBroker
from tests.producer.conftest import receive, subscribe, unique_topics


def an_entry(seed: int | None = None) -> Entry:
    return synthetic_entry(random.Random(seed if seed is not None else uuid.uuid4().int), "12345678")


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Data points by metric name (counters have .value; histograms .count, .sum, .max)."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def test_every_publish_kind_round_trips(
    pulsar_broker: PulsarBroker, reader_client: pulsar_asyncio.Client
) -> None:
    topics = unique_topics()
    consumer = await subscribe(reader_client, topics.entry_topics())
    entry = an_entry()
    async with await EntryEventProducer.connect(pulsar_broker.url, topics=topics) as producer:
        sent = [
            await producer.publish_created(entry, "user-1"),
            await producer.publish_updated(entry.model_copy(update={"account_number": "42"}), "user-2"),
            await producer.publish_deleted_immediate(entry, "user-3"),
            await producer.publish_deleted(entry, DeletionType.WAITING_PERIOD, "user-4"),
        ]
    expected = [
        (topics.full(topics.created), EventType.CREATED, None),
        (topics.full(topics.updated), EventType.UPDATED, None),
        (topics.full(topics.deleted_immediate), EventType.DELETED, DeletionType.IMMEDIATE),
        (topics.full(topics.deleted_waiting_period), EventType.DELETED, DeletionType.WAITING_PERIOD),
    ]
    received = {}
    for _ in expected:
        message = await receive(consumer)
        received[message.topic_name()] = message
    for published, (topic, event_type, deletion_type) in zip(sent, expected, strict=True):
        message = received[topic]
        event = parse_event_json(message.data())
        assert published.topic == topic
        assert json.loads(message.data())["schema"] == "cidsync.entry-event/v1"
        assert (event.event_type, event.deletion_type) == (event_type, deletion_type)
        assert event.event_id == published.event_id
        assert event.entry.id == entry.id
        assert message.partition_key() == str(entry.id)
        assert message.properties()["event_id"] == str(published.event_id)
        assert published.message_id
    sequences = [p.sequence for p in sent]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4


async def test_per_entry_order_holds_for_1000_interleaved_events(
    pulsar_broker: PulsarBroker, reader_client: pulsar_asyncio.Client
) -> None:
    topics = unique_topics()
    consumer = await subscribe(reader_client, [topics.full(topics.updated)])
    entries = [an_entry(i) for i in range(50)]
    async with await EntryEventProducer.connect(pulsar_broker.url, topics=topics) as producer:
        # Round robin over the entries, all in flight at once: 20 updates each, 1,000 events.
        sends = [
            asyncio.ensure_future(producer.publish_updated(entry.model_copy(update={"account_number": str(n)}), "u"))
            for n in range(20)
            for entry in entries
        ]
        published = await asyncio.gather(*sends)
    assert len(published) == 1000
    seen: dict[uuid.UUID, list[int]] = {e.id: [] for e in entries}
    for _ in range(1000):
        event = parse_event_json((await receive(consumer)).data())
        seen[event.entry.id].append(int(event.entry.account_number))
    assert all(numbers == list(range(20)) for numbers in seen.values())


async def test_a_batch_holds_the_events_of_one_entry(
    pulsar_broker: PulsarBroker, reader_client: pulsar_asyncio.Client
) -> None:
    """Key-based batching: a Key_Shared broker dispatches a batch whole, by its first message's key, so
    a batch of mixed entries would reach the consumer of one of them (Apache Pulsar; pulsar-lite hides it).
    A batch is one broker entry: the messages sharing a (ledger, entry) id."""
    topics = unique_topics()
    consumer = await subscribe(reader_client, [topics.full(topics.updated)])
    entries = [an_entry(i) for i in range(10)]
    async with await EntryEventProducer.connect(pulsar_broker.url, topics=topics) as producer:
        sends = [
            asyncio.ensure_future(producer.publish_updated(entry.model_copy(update={"account_number": str(n)}), "u"))
            for n in range(20)
            for entry in entries
        ]
        await asyncio.gather(*sends)
    batches: dict[tuple[int, int], set[str]] = {}
    sizes: dict[tuple[int, int], int] = {}
    for _ in range(200):
        message = await receive(consumer)
        at = (message.message_id().ledger_id(), message.message_id().entry_id())
        batches.setdefault(at, set()).add(message.partition_key())
        sizes[at] = sizes.get(at, 0) + 1
    assert max(sizes.values()) > 1  # not vacuous: the events were batched
    assert all(len(keys) == 1 for keys in batches.values())


def test_the_producer_writes_only_a_version_this_release_knows() -> None:
    assert ProducerConfig().schema == "cidsync.entry-event/v1"
    with pytest.raises(InvalidInput) as caught:
        ProducerConfig(schema="cidsync.entry-event/v2")
    assert "this release writes cidsync.entry-event/v1, not cidsync.entry-event/v2" in caught.value.summary()


async def test_an_invalid_entry_publishes_nothing(
    pulsar_broker: PulsarBroker, reader_client: pulsar_asyncio.Client
) -> None:
    topics = unique_topics()
    consumer = await subscribe(reader_client, topics.entry_topics())
    bad = an_entry().model_dump(mode="json") | {"key": "not a CPF", "participant": "1"}
    async with await EntryEventProducer.connect(pulsar_broker.url, topics=topics) as producer:
        with pytest.raises(InvalidInput) as caught:
            await producer.publish_created(bad, "user-1")
        assert {p.field for p in caught.value.problems} >= {"event.entry.participant"}
        with pytest.raises(InvalidInput, match="user_id"):
            await producer.publish_created(an_entry(), "")
        marker = await producer.publish_created(an_entry(), "user-1")
        assert producer.stats.sent == 1
    # The first (and only) message on any entry topic is the valid one sent after the invalid ones.
    first = parse_event_json((await receive(consumer)).data())
    assert first.event_id == marker.event_id


async def test_metrics_count_only_what_the_broker_acknowledged(pulsar_broker: PulsarBroker) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with await EntryEventProducer.connect(
        pulsar_broker.url, topics=unique_topics(), meter_provider=provider
    ) as producer:
        await asyncio.gather(*(producer.publish_created(an_entry(), "u") for _ in range(25)))
    points = metric_points(reader)
    assert sum(p.value for p in points["cidsync.producer.messages.sent"]) == 25
    assert sum(p.count for p in points["cidsync.producer.send.latency"]) == 25
    assert sum(p.sum for p in points["cidsync.producer.batch.size"]) == 25  # every message in some batch


async def test_low_latency_preset_sends_one_message_per_entry(pulsar_broker: PulsarBroker) -> None:
    reader = InMemoryMetricReader()
    config = ProducerConfig.low_latency()
    assert not config.batching
    async with await EntryEventProducer.connect(
        pulsar_broker.url, topics=unique_topics(), config=config, meter_provider=MeterProvider(metric_readers=[reader])
    ) as producer:
        await asyncio.gather(*(producer.publish_created(an_entry(), "u") for _ in range(10)))
    sizes = metric_points(reader)["cidsync.producer.batch.size"]
    assert sum(p.count for p in sizes) == 10
    assert max(p.max for p in sizes) == 1


def test_sequences_increase_strictly() -> None:
    from cidsync.producer import SequenceClock

    clock = SequenceClock()
    values = [clock.next() for _ in range(10_000)]
    assert all(b > a for a, b in itertools.pairwise(values))


def test_publish_kinds_cover_every_topic() -> None:
    topics = unique_topics()
    assert len(set(topics.entry_topics())) == 4
    assert topics.dead_letter_topic not in topics.entry_topics()


async def test_publish_events_in_bulk_keeps_each_outcome_per_entry_order_and_the_metrics(
    pulsar_broker: PulsarBroker, reader_client: pulsar_asyncio.Client
) -> None:
    topics = unique_topics()
    consumer = await subscribe(reader_client, topics.entry_topics())
    reader = InMemoryMetricReader()
    entries = [an_entry(i) for i in range(30)]
    # max_in_flight 100: 2,400 events go in 24 chunks, so chunk boundaries are crossed many times.
    config = ProducerConfig(max_in_flight=100)
    async with await EntryEventProducer.connect(
        pulsar_broker.url, topics=topics, config=config, meter_provider=MeterProvider(metric_readers=[reader])
    ) as producer:
        events = [producer.build(EventType.CREATED, entry, "u") for entry in entries]
        events += [
            producer.build(EventType.UPDATED, entry.model_copy(update={"account_number": str(n)}), "u")
            for n in range(1, 80)
            for entry in entries
        ]
        outcomes = await producer.publish_events(events)
    assert [getattr(o, "event_id", None) for o in outcomes] == [e.event_id for e in events]
    assert producer.stats.sent == len(events) == 2400
    points = metric_points(reader)
    assert sum(p.value for p in points["cidsync.producer.messages.sent"]) == 2400
    assert sum(p.count for p in points["cidsync.producer.send.latency"]) == 2400

    updates: dict[uuid.UUID, list[int]] = {e.id: [] for e in entries}
    for _ in range(2400):
        message = await receive(consumer)
        event = parse_event_json(message.data())
        assert message.properties()["event_id"] == str(event.event_id)
        assert message.partition_key() == str(event.entry.id)
        if event.event_type is EventType.UPDATED:
            updates[event.entry.id].append(int(event.entry.account_number))
    assert all(numbers == list(range(1, 80)) for numbers in updates.values())
