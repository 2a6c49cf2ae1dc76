"""`BatchConsumer` against the real broker: batches bounded by the policy, acks that stick, a quiet topic
waited on rather than polled with the loop free meanwhile, nothing lost across a close, and a message
nacked again and again still comes back."""

import asyncio
import time
import uuid

import pulsar
import pulsar.asyncio as pulsar_asyncio

from cidsync.pulsar_client import pulsar_client
from cidsync.pulsar_native import IDLE_WAIT_MS, BatchConsumer
from cidsync_tooling.devstack.spec import StarterSpec, load_spec
from tests.helpers.servers import DEV_STACK_FILE, PulsarBroker

WAIT_MS = 50


async def subscribe(
    client: pulsar_asyncio.Client,
    topic: str,
    subscription: str,
    *,
    # Shared: pulsar-lite's Key_Shared hands back only one unacked message per key after a reconnect
    # (seen here; the issue 11 note has the reproduction), which is not what these tests are about.
    consumer_type: pulsar.ConsumerType = pulsar.ConsumerType.Shared,
    nack_delay_ms: int = 60_000,
) -> BatchConsumer:
    consumer = await client.subscribe(
        topic,
        subscription,
        consumer_type=consumer_type,
        initial_position=pulsar.InitialPosition.Earliest,
        receiver_queue_size=1000,
        negative_ack_redelivery_delay_ms=nack_delay_ms,
        batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(100, -1, WAIT_MS),
    )
    return BatchConsumer(consumer)


async def publish(client: pulsar_asyncio.Client, topic: str, count: int) -> None:
    producer = await client.create_producer(topic, batching_enabled=False)
    await asyncio.gather(*(producer.send(f"m{i}".encode(), partition_key=str(i % 7)) for i in range(count)))
    await producer.close()


async def test_batches_are_bounded_and_acks_stick(pulsar_broker: PulsarBroker) -> None:
    topic, client = f"persistent://public/default/native-{uuid.uuid4().hex}", pulsar_client(pulsar_broker.url)
    try:
        await publish(client, topic, 250)
        receiver = await subscribe(client, topic, "s")
        seen: list[bytes] = []
        sizes = []
        while len(seen) < 250:
            batch = await receiver.receive()
            sizes.append(len(batch))
            seen += [m.data() for m in batch]
            # The first 200 are acked; the last 50 are received but never acked. (Unbatched messages: an
            # acked message of a batch comes back with its unacked batch-mates, as Pulsar documents.)
            for message in batch:
                if int(message.data()[1:]) < 200:
                    receiver.acknowledge(message)
        assert sorted(seen) == sorted(f"m{i}".encode() for i in range(250))
        assert max(sizes) <= 100
        await receiver.consumer.close()

        # Reopened: the unacked 50 come back, and none of the acked ones.
        receiver = await subscribe(client, topic, "s")
        again: list[bytes] = []
        async with asyncio.timeout(10):
            while len(again) < 50:
                batch = await receiver.receive()
                again += [m.data() for m in batch]
                for message in batch:
                    receiver.acknowledge(message)
        await asyncio.sleep(0.2)  # anything further would arrive now
        again += [m.data() for m in await receiver.receive()]
        assert sorted(again) == sorted(f"m{i}".encode() for i in range(200, 250))
        await receiver.consumer.close()
    finally:
        await client.close()


async def test_a_quiet_topic_is_waited_on_not_polled_and_the_loop_stays_free(pulsar_broker: PulsarBroker) -> None:
    """An empty batch (after the policy's wait) makes the next receives wait for one message, up to
    IDLE_WAIT_MS each, in their thread; what arrives during such a wait is handed over with it, then the
    rest in one batch."""
    topic, client = f"persistent://public/default/native-{uuid.uuid4().hex}", pulsar_client(pulsar_broker.url)
    try:
        receiver = await subscribe(client, topic, "s")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        started = time.perf_counter()
        batches = [await receiver.receive() for _ in range(3)]
        elapsed = time.perf_counter() - started
        assert batches == [[], [], []]
        assert elapsed >= (WAIT_MS + 2 * IDLE_WAIT_MS) / 1000 * 0.9  # one batch wait, then two quiet waits
        assert ticks >= 10  # the loop ran other work while the receives waited in their thread

        waiting = asyncio.ensure_future(receiver.receive())  # a quiet wait
        await publish(client, topic, 5)
        first = await waiting
        ticker.cancel()
        received = [m.data() for m in first]
        async with asyncio.timeout(10):
            while len(received) < 5:
                received += [m.data() for m in await receiver.receive()]
        assert len(first) == 1  # the quiet wait hands over the first message at once, not a batch later
        assert sorted(received) == sorted(f"m{i}".encode() for i in range(5))
        await receiver.consumer.close()
    finally:
        await client.close()


async def test_a_message_nacked_again_after_its_redelivery_comes_back_each_time(pulsar_broker: PulsarBroker) -> None:
    """The starter's retry of an event whose start keeps failing (Temporal down for longer than one
    redelivery), on the subscription type the embedded stack's starter uses. On pulsar-lite's Key_Shared a
    second nack was never redelivered: the broker logged it queued for redelivery and never dispatched it,
    not even to a new consumer, and the fault test that stops Temporal lost every event nacked twice. The
    type is the one `make demo`'s temporal-dev.yaml declares, which must be the spec's default the tests use."""
    declared = load_spec(DEV_STACK_FILE).starter.subscription_type
    assert declared == StarterSpec().subscription_type
    consumer_type = {"shared": pulsar.ConsumerType.Shared, "key_shared": pulsar.ConsumerType.KeyShared}[declared]
    topic, client = f"persistent://public/default/native-{uuid.uuid4().hex}", pulsar_client(pulsar_broker.url)
    nacks = 3
    try:
        await publish(client, topic, 3)
        receiver = await subscribe(client, topic, "s", consumer_type=consumer_type, nack_delay_ms=500)
        deliveries: dict[bytes, int] = {}
        async with asyncio.timeout(30):
            while len(deliveries) < 3 or min(deliveries.values()) <= nacks:
                for message in await receiver.receive():
                    deliveries[message.data()] = deliveries.get(message.data(), 0) + 1
                    if deliveries[message.data()] <= nacks:
                        await receiver.negative_acknowledge(message)
                    else:
                        receiver.acknowledge(message)
        assert deliveries == {b"m0": nacks + 1, b"m1": nacks + 1, b"m2": nacks + 1}
        await receiver.consumer.close()
    finally:
        await client.close()
