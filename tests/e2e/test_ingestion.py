"""End to end on the real stack: the producer publishes, the starter starts, the worker applies."""

import json
import uuid

import pytest
from temporalio.testing import WorkflowEnvironment

from cidsync.producer import EntryEventProducer, ProducerConfig
from cidsync.pulsar_client import pulsar_client
from starters.options import Mode
from tests.e2e.harness import (
    expected_vsyncs,
    history_events,
    running_pipeline,
    shuffled_with_duplicates,
    wait_for_vsyncs,
)
from tests.helpers.servers import PulsarBroker
from tests.producer.conftest import receive, subscribe


@pytest.mark.parametrize("mode", [Mode.PER_EVENT, Mode.BATCH])
async def test_duplicates_reordering_and_malformed_messages(
    temporal_env: WorkflowEnvironment, store_url: str, pulsar_broker: PulsarBroker, mode: Mode
) -> None:
    """On a real Redis and on a real Redis Cluster (the participants' pairs spread over its primaries)."""
    async with running_pipeline(temporal_env, store_url, pulsar_broker.url, mode=mode, participants=3) as pipeline:
        events = history_events(150, pipeline.participants, seed=uuid.uuid4().int % 1000)
        delivered = shuffled_with_duplicates(events, seed=7, duplicates=40)
        async with EntryEventProducer(
            pulsar_client(pulsar_broker.url), topics=pipeline.topics, config=ProducerConfig(), owns_client=True
        ) as producer:
            await producer.start()
            for event in delivered:  # reordered across topics and within them, duplicates included
                await producer.publish_event(event)
            raw = await producer.client.create_producer(pipeline.topics.full(pipeline.topics.created))
            await raw.send(b"{this is not json", partition_key="bad-1")
            schema_breaker = json.loads(events[0].to_json()) | {"sequence": -5}
            await raw.send(json.dumps(schema_breaker).encode(), partition_key="bad-2")
            await raw.close()

        await wait_for_vsyncs(pipeline.store, pipeline.participants, expected_vsyncs(events))

        client = pulsar_client(pulsar_broker.url)
        try:
            dlq = await subscribe(client, [pipeline.topics.dead_letter_topic])
            letters = [await receive(dlq) for _ in range(2)]
            reasons = sorted(letter.properties()["reason"] for letter in letters)
            assert reasons[0].startswith("invalid event: event.sequence: Input should be greater than or equal to 1")
            assert reasons[1].startswith("invalid event: event: Invalid JSON")
            assert {letter.properties()["original_topic"] for letter in letters} == {
                pipeline.topics.full(pipeline.topics.created)
            }
        finally:
            await client.close()
        # Nothing else was dead-lettered: the duplicates and reordered events were all applied.
        assert pipeline.starter.stats.dead_lettered == 2
