"""Batch mode never holds a partial batch back: an event with nothing after it is applied within the
batch's wait, not when the next message happens to arrive (which at 03:00 may be hours later)."""

import uuid
from functools import partial

from temporalio.testing import WorkflowEnvironment

from cidsync.producer import EntryEventProducer
from cidsync.pulsar_client import pulsar_client
from starters.options import Mode
from tests.e2e.harness import history_events, running_pipeline
from tests.helpers.eventually import eventually
from tests.helpers.servers import PulsarBroker, RedisServer


async def test_a_lone_event_is_applied_without_waiting_for_the_next_message(
    temporal_env: WorkflowEnvironment, redis_server: RedisServer, pulsar_broker: PulsarBroker
) -> None:
    async with (
        running_pipeline(
            temporal_env, redis_server.url, pulsar_broker.url, mode=Mode.BATCH, participants=1
        ) as pipeline,
        EntryEventProducer(pulsar_client(pulsar_broker.url), topics=pipeline.topics, owns_client=True) as producer,
    ):
        await producer.start()
        for lone in history_events(3, pipeline.participants, seed=uuid.uuid4().int % 1000):
            await producer.publish_event(lone)
            entry = lone.entry
            # The batch waits 100 ms here; 10 s is generous.
            await eventually(
                partial(pipeline.store.ingestion.is_marked, entry.participant, entry.key_type, str(lone.event_id)),
                bool,
                "the lone event applied",
                timeout=10,
                every=0.05,
            )
