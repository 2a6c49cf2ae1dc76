"""The fixtures start real, working servers: each is used for real once here."""

import time
import uuid

import pulsar
import redis.asyncio as redis
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.helpers.servers import PulsarBroker, RedisServer
from tests.integration.harness_workflows import SleepThenAnswer


async def test_redis_is_real(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        key = f"harness:{uuid.uuid4()}"
        assert await client.set(key, "v", nx=True, ex=60)
        assert not await client.set(key, "w", nx=True, ex=60)
        assert await client.bitop("XOR", key + ":x", key, key) == 1
    finally:
        await client.aclose()


def test_pulsar_round_trip(pulsar_broker: PulsarBroker) -> None:
    client = pulsar.Client(pulsar_broker.url, operation_timeout_seconds=10)
    try:
        topic = f"persistent://public/default/harness-{uuid.uuid4()}"
        consumer = client.subscribe(topic, "harness", consumer_type=pulsar.ConsumerType.Shared)
        producer = client.create_producer(topic, batching_enabled=False)
        producer.send(b"hello", partition_key="entry-1")
        message = consumer.receive(timeout_millis=10_000)
        consumer.acknowledge(message)
        assert (message.data(), message.partition_key()) == (b"hello", "entry-1")
    finally:
        client.close()


async def test_temporal_dev_server_runs_a_workflow(temporal_env: WorkflowEnvironment) -> None:
    queue = f"harness-{uuid.uuid4()}"
    async with Worker(temporal_env.client, task_queue=queue, workflows=[SleepThenAnswer]):
        result = await temporal_env.client.execute_workflow(
            SleepThenAnswer.run, 0, id=f"harness-{uuid.uuid4()}", task_queue=queue
        )
    assert result == "slept 0 days"


async def test_time_skipping_skips_three_days(time_skipping_env: WorkflowEnvironment) -> None:
    queue = f"harness-{uuid.uuid4()}"
    started = time.monotonic()
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=[SleepThenAnswer]):
        result = await time_skipping_env.client.execute_workflow(
            SleepThenAnswer.run, 3, id=f"harness-{uuid.uuid4()}", task_queue=queue
        )
    assert result == "slept 3 days"
    assert time.monotonic() - started < 60  # three days of workflow time in well under a minute of wall time
