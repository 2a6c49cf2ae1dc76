"""What `pulsar.asyncio` (pulsar-client 3.x) does not offer, where the cost per message matters.

The asyncio wrapper completes one future per message from the client's own thread, through
`call_soon_threadsafe`: a write to the loop's self-pipe and a wake-up for every message sent, received
or acked. At thousands of messages a second that was the largest single cost of the starter (issue 11's
profile: ~25% of its samples in the loop's self-pipe, task and future machinery).

Receiving: the native consumer underneath has what the wrapper lacks:

- `batch_receive()`, bounded by the subscription's `ConsumerBatchReceivePolicy` (a message count and a
  wait), which releases the GIL while it waits: run in a worker thread it hands over up to a whole batch
  for one wake-up of the loop;
- `acknowledge()`, which only records the ack (the client groups acks and sends them on its own thread)
  and returns at once, so nothing is gained by awaiting it.

Sending: `send_async` with a plain callback, run on the client's thread, so that a caller sending many
messages at once can wake the loop once for all their acknowledgements (`EntryEventProducer.publish_events`)
rather than once per message as the wrapper's `send` does.

When a batch comes back empty the topic is quiet, and the next receive waits for one message (the native
`receive`, which also releases the GIL) for up to `IDLE_WAIT_MS`, returning the moment one arrives:
polling with the batch policy's short wait (10 ms) cost an idle starter 4.5 CPU-seconds a minute (400
thread hand-offs a second over four topics), and the single receive adds no latency to a lone event.

A receive in progress is never cancelled, so no message can be dropped between the client and us: on stop
the caller lets the current receive return (it does within the policy's wait, or `IDLE_WAIT_MS` when
idle) and handles or leaves unacked what it got; closing the consumer hands unacked messages back to the
broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import _pulsar
import pulsar
import pulsar.asyncio as pulsar_asyncio
from pulsar.schema import BytesSchema

_BYTES = BytesSchema()
IDLE_WAIT_MS = 250  # how long a receive on a quiet topic waits for its first message


class BatchConsumer:
    """The native calls of one `pulsar.asyncio.Consumer` that it does not expose."""

    def __init__(self, consumer: pulsar_asyncio.Consumer) -> None:
        self.consumer = consumer
        self._native = consumer._consumer  # the wrapper keeps the native consumer here
        self.topic: str = self._native.topic().rsplit("/", 1)[-1]  # the short name, for metric labels
        self._quiet = False  # the last batch was empty: wait for one message rather than poll

    def connected(self) -> bool:
        """Whether the client holds a live connection to the broker for this consumer (readiness)."""
        return bool(self._native.is_connected())

    async def receive(self) -> list[pulsar.Message]:
        """What arrived, up to the policy's count, waiting at most the policy's wait; may be empty.

        A failure of the native call (`_pulsar.PulsarException`, which is not the asyncio wrapper's
        `PulsarException`) is raised as a `ReceiveFailed`, a `ConnectionError`: the caller waits and
        receives again while the client reconnects by itself."""
        try:
            if self._quiet:
                try:
                    first = await asyncio.to_thread(self._native.receive, IDLE_WAIT_MS)
                except _pulsar.Timeout:
                    return []
                self._quiet = False
                return [_wrap(first)]  # the rest that arrived with it comes in the next batch
            received = await asyncio.to_thread(self._native.batch_receive)
        except _pulsar.PulsarException as error:
            raise ReceiveFailed(f"receive from {self.topic} failed: {error}") from error
        self._quiet = not received
        return [_wrap(native) for native in received]

    def acknowledge(self, message: pulsar.Message) -> None:
        self._native.acknowledge(message._message)  # see the module docstring

    async def negative_acknowledge(self, message: pulsar.Message) -> None:
        await self.consumer.negative_acknowledge(message)

    async def close(self) -> None:
        """Unacked messages go back to the broker, for this subscription's other consumers or a restart."""
        await self.consumer.close()


class ReceiveFailed(ConnectionError):
    """The broker could not be read from just now."""


def _wrap(native: object) -> pulsar.Message:
    """The same public `Message` that `pulsar.asyncio.Consumer.receive` builds around a native one."""
    message = pulsar.Message()
    message._message = native
    message._schema = _BYTES
    return message


def send_async(
    producer: pulsar_asyncio.Producer,
    payload: bytes,
    *,
    properties: Mapping[str, str],
    partition_key: str,
    event_timestamp: int,
    callback: Callable[[_pulsar.Result, object], None],
) -> None:
    """Queue one message on the wrapper's native producer; `callback(result, native message id)` runs on
    the client's thread once the broker has answered (or the send timed out)."""
    builder = _pulsar.MessageBuilder()
    builder.content(payload)
    for name, value in properties.items():
        builder.property(name, value)
    builder.partition_key(partition_key)
    builder.event_timestamp(event_timestamp)
    producer._producer.send_async(builder.build(), callback)  # the wrapper keeps the native producer here


def producer_connected(producer: pulsar_asyncio.Producer) -> bool:
    """Whether the client holds a live connection to the broker for this producer (readiness)."""
    return bool(producer._producer.is_connected())


def public_message_id(native: object) -> pulsar.MessageId:
    """The public `MessageId` for a native one, as the wrapper's `send` returns it."""
    n: _pulsar.MessageId = native
    return pulsar.MessageId(n.partition(), n.ledger_id(), n.entry_id(), n.batch_index())
