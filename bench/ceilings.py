"""The ceilings `make bench` measures before ours, on the same stack in the same round.

- raw producer: the native client's `send_async` with a bare callback, from a plain thread (no event loop),
  of prebuilt payloads with the same batching, compression, properties, partition keys and timestamps as
  `EntryEventProducer`: what the client library itself reaches with these messages (the ceilings' producer
  row). An asyncio producer pays for the loop on top: `pulsar.asyncio`'s own `send`, one future each,
  reached about 0.4 of it here;
- raw Pulsar -> Redis: the same messages consumed in batches (one consumer per topic), each parsed as JSON,
  one idempotency-style `SET` each in a pipeline per batch, acked: the least any ingestion must do, in one
  Python process;
- no-op workflows: workflows that return at once, started 200 at a time (the starter's `max_in_flight`)
  from one client and run by a worker process with the cidsync worker's settings: what the server completes
  per second, which bounds per-event mode (one workflow per event).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pulsar
import redis
from temporalio.client import Client

from bench.noop_workflow import NOOP_TASK_QUEUE, NoOp
from cidsync.events import EntryEvent
from cidsync.producer import ProducerConfig
from cidsync_tooling.devstack.processes import launch

STALL_SECONDS = 30.0


def raw_producer(pulsar_url: str, events: Sequence[EntryEvent], config: ProducerConfig | None = None) -> float:
    """Messages/s acknowledged, sending prebuilt payloads to a scratch topic (blocking: run it in a thread),
    batched as `config` (default: the producer's default) batches."""
    c = config or ProducerConfig()
    client = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(
        f"persistent://public/default/bench-raw-{uuid.uuid4().hex[:8]}",
        compression_type=pulsar.CompressionType.LZ4,
        batching_enabled=True,
        batching_type=pulsar.BatchingType.KeyBased if c.key_based_batching else pulsar.BatchingType.Default,
        batching_max_messages=c.batching_max_messages,
        batching_max_publish_delay_ms=c.batching_max_publish_delay_ms,
        max_pending_messages=c.max_in_flight,
        block_if_queue_full=True,
    )
    prebuilt = [
        (
            e.to_json().encode(),
            {
                "schema": e.schema_,
                "event_type": e.event_type.value,
                "event_id": str(e.event_id),
                "sequence": str(e.sequence),
            },
            str(e.entry.id),
            int(e.occurred_at.timestamp() * 1000),
        )
        for e in events
    ]
    answered = threading.Semaphore(0)
    failed: list[pulsar.Result] = []

    def callback(result: pulsar.Result, _: pulsar.MessageId) -> None:
        if result != pulsar.Result.Ok:
            failed.append(result)
        answered.release()

    started = time.perf_counter()
    for payload, properties, key, timestamp in prebuilt:
        producer.send_async(payload, callback, properties=properties, partition_key=key, event_timestamp=timestamp)
    for _ in prebuilt:
        answered.acquire()
    elapsed = time.perf_counter() - started
    producer.close()
    client.close()
    if failed:
        raise RuntimeError(f"the raw producer's sends failed: {failed[:3]}")
    return len(prebuilt) / elapsed


def raw_pulsar_to_redis(pulsar_url: str, redis_url: str, topics: list[str], count: int) -> float:
    """Messages/s from the first batch received to the last written and acked: one blocking consumer per
    topic on a thread of its own, as the starter has one per topic (no event loop in the way)."""
    client = pulsar.Client(pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    store = redis.Redis.from_url(redis_url)
    consumers = [
        client.subscribe(
            topic,
            "bench-ceiling",
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=1000,
            batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(500, -1, 100),
        )
        for topic in topics
    ]
    done = [0] * len(consumers)
    first: list[float] = []
    finished: list[float] = []
    last_message = [time.monotonic()]

    def consume(index: int) -> None:
        consumer = consumers[index]
        while sum(done) < count and time.monotonic() - last_message[0] < STALL_SECONDS:
            messages = consumer.batch_receive()
            if not messages:
                continue
            first.append(time.perf_counter())
            last_message[0] = time.monotonic()
            pipe = store.pipeline(transaction=False)
            for message in messages:
                event = json.loads(message.data())
                pipe.set(f"bench:ceiling:{event['event_id']}", 1, ex=600)
            pipe.execute()
            for message in messages:
                consumer.acknowledge(message)
            done[index] += len(messages)
            finished.append(time.perf_counter())

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(consumers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(finished) - min(first)
    for consumer in consumers:
        consumer.close()
    client.close()
    store.close()
    if sum(done) < count:
        raise RuntimeError(
            f"the broker stopped delivering after {sum(done)} of {count} messages: this round cannot be measured"
        )
    return count / elapsed


async def noop_workflows(temporal_address: str, count: int, log: Path, in_flight: int = 200) -> float:
    """Workflows completed per second, from the first start to the moment all are completed."""
    client = await Client.connect(temporal_address)
    argv = [sys.executable, "-m", "bench.noop_worker", temporal_address]
    worker = launch("noop-worker", argv, log=log, ready=lambda: True, cwd=Path(__file__).parent.parent)
    try:
        await asyncio.sleep(2)  # the worker connects and polls
        slots = asyncio.Semaphore(in_flight)
        run = uuid.uuid4().hex[:8]

        async def start(index: int) -> None:
            async with slots:
                await client.start_workflow(NoOp.run, index, id=f"noop-{run}-{index}", task_queue=NOOP_TASK_QUEUE)

        started = time.perf_counter()
        await asyncio.gather(*(start(i) for i in range(count)))
        query = f'WorkflowType="NoOp" AND ExecutionStatus="Completed" AND WorkflowId STARTS_WITH "noop-{run}-"'
        # Visibility is the only place completions are counted without a long poll per run.
        while (await client.count_workflows(query)).count < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return count / (time.perf_counter() - started)
    finally:
        worker.stop()
