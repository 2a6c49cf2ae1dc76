"""With the broker gone, a publish fails loudly, is dead-lettered when possible, and is never counted."""

import asyncio
import random
import uuid
from collections.abc import Callable

import pytest

from cidsync.events import EventType
from cidsync.producer import EntryEventProducer, ProducerConfig, PublishFailed
from cidsync.pulsar_client import pulsar_client
from cidsync_tooling.synthetic import synthetic_entry
from tests.producer.conftest import StoppableBroker, receive, subscribe, unique_topics

# Real backoff (1 s, 2 s, 4 s); a short send timeout so each of the 4 attempts fails within a second.
CONFIG = ProducerConfig(send_timeout_ms=1_000)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        # The producer's counters have no event to wait on; polling them adds no timing assumption.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_failed_publish_lands_in_the_dlq_once_the_broker_is_back(stoppable_broker: StoppableBroker) -> None:
    topics = unique_topics()
    rng = random.Random(uuid.uuid4().int)
    producer = await EntryEventProducer.connect(stoppable_broker.url, topics=topics, config=CONFIG)
    try:
        before = await producer.publish_created(synthetic_entry(rng, "12345678"), "user-1")
        stoppable_broker.stop()
        lost = synthetic_entry(rng, "12345678")
        attempt = asyncio.ensure_future(producer.publish_created(lost, "user-1"))
        # Every attempt has failed (1 + 3 retries); the event now waits for the dead-letter topic.
        await _until(lambda: producer.stats.failed_attempts == 4)
        assert not attempt.done()
        stoppable_broker.start()
        with pytest.raises(PublishFailed) as failed:
            await attempt
        assert failed.value.dead_lettered
        assert failed.value.attempts == 4
        assert "sent to the dead-letter topic" in str(failed.value)
        assert (producer.stats.sent, producer.stats.failed, producer.stats.dead_lettered) == (1, 1, 1)
    finally:
        await producer.close()

    client = pulsar_client(stoppable_broker.url)
    try:
        dlq = await subscribe(client, [topics.dead_letter_topic])
        letter = await receive(dlq)
        assert letter.properties()["event_id"] == str(failed.value.event_id)
        assert letter.properties()["original_topic"] == topics.full(topics.created)
        assert letter.properties()["attempts"] == "4"
        assert letter.properties()["error"]
        assert letter.partition_key() == str(lost.id)
        # Only what was acknowledged is on the topic: the event sent before the outage.
        created = await subscribe(client, [topics.full(topics.created)])
        assert (await receive(created)).properties()["event_id"] == str(before.event_id)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                await created.receive()
    finally:
        await client.close()


async def test_an_unreachable_dlq_is_reported_clearly(stoppable_broker: StoppableBroker) -> None:
    config = ProducerConfig(send_timeout_ms=1_000, dead_letter_send_timeout_ms=1_500)
    producer = await EntryEventProducer.connect(stoppable_broker.url, topics=unique_topics(), config=config)
    try:
        stoppable_broker.stop()
        with pytest.raises(PublishFailed) as failed:
            await producer.publish_created(synthetic_entry(random.Random(), "12345678"), "user-1")
        assert not failed.value.dead_lettered
        assert "NOT stored anywhere" in str(failed.value)
        assert (producer.stats.sent, producer.stats.failed, producer.stats.dead_lettered) == (0, 1, 0)
    finally:
        stoppable_broker.start()
        await producer.close()


async def test_bulk_publish_with_the_broker_gone_retries_each_event_then_dead_letters_it(
    stoppable_broker: StoppableBroker,
) -> None:
    topics = unique_topics()
    rng = random.Random(uuid.uuid4().int)
    producer = await EntryEventProducer.connect(stoppable_broker.url, topics=topics, config=CONFIG)
    try:
        stoppable_broker.stop()
        events = [producer.build(EventType.CREATED, synthetic_entry(rng, "12345678"), "u") for _ in range(3)]
        bulk = asyncio.ensure_future(producer.publish_events(events))
        # The bulk pass fails for all 3; then the first goes through publish_event's 4 attempts and waits
        # for the dead-letter topic. The broker comes back: it is dead-lettered, the other two are sent.
        await _until(lambda: producer.stats.failed_attempts == 3 + 4)
        stoppable_broker.start()
        first, *others = await bulk
    finally:
        await producer.close()
    assert isinstance(first, PublishFailed)
    assert first.dead_lettered
    assert first.event_id == events[0].event_id
    assert [getattr(o, "event_id", None) for o in others] == [e.event_id for e in events[1:]]
    assert (producer.stats.sent, producer.stats.failed, producer.stats.dead_lettered) == (2, 1, 1)
