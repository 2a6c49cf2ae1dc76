"""The starter bridge: entry events from Pulsar become Temporal workflow starts (docs/design.md §2, §3, §4).

For each message:
- it does not parse or breaks the contract: dead-letter it with the reason, then ack (it can never
  succeed);
- else it becomes its minimal change (`CIDChange.of_event`: ids, the key's keyed hash, the CID, the
  sequence). The entry itself, with its personal data, goes no further than this process's memory:
  Temporal sees the change only (docs/design.md §5);
- its idempotency mark is in Redis: it was applied already; ack (in batch mode the marks of a whole
  batch are looked up in one pipelined round trip, just before its start);
- else start its workflow with the deterministic id (USE_EXISTING + REJECT_DUPLICATE) and ack only once
  Temporal has accepted the start; "already started" is accepted too;
- Temporal or Redis unavailable: nack after a backoff that doubles with each redelivery, and after
  `max_redeliveries` dead-letter it with the last error.

What happens to a message whose handling failed (halt, redeliver, dead-letter) is `starters.redelivery`.

Messages arrive in batches (`cidsync.pulsar_native`: one wake-up of the event loop for up to
`receive_max_messages`), are parsed inline, and their starts run as tasks: at most `max_in_flight`
per-event starts, or `batches_in_flight` batch starts, at once. Waiting for a free slot is the
backpressure: the loop receives no more while all are taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pulsar
import pulsar.asyncio as pulsar_asyncio
from opentelemetry.trace import Link, Span, SpanKind
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from cidsync.config import ROLE_CONNECT_WAIT, Settings
from cidsync.errors import InvalidInput
from cidsync.events import DeletionType, EventType, parse_event_json
from cidsync.naming import (
    SEARCH_ATTRIBUTES,
    batch_search_attributes,
    batch_workflow_id,
    event_search_attributes,
    event_summary,
    event_workflow_id,
    search_attribute_types,
)
from cidsync.pulsar_client import pulsar_client
from cidsync.pulsar_native import BatchConsumer
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.models import CIDBatch, CIDChange
from cidsync.telemetry import instruments, tracing
from cidsync.telemetry.endpoint import Health
from cidsync.topics import Topics
from starters.options import Mode, StarterConfig
from starters.redelivery import (
    INVALID_EVENT,
    REDELIVERIES_EXHAUSTED,
    TRANSIENT,
    Action,
    RedeliveryPolicy,
    dead_letter_properties,
)
from workflows.apply_cid_batch import ApplyCIDBatch
from workflows.create_cid import CreateCID
from workflows.delete_cid import DeleteCID, DeleteCIDInput
from workflows.update_cid import UpdateCID

logger = logging.getLogger(__name__)

Batched = tuple[pulsar.Message, CIDChange, Link | None]  # the link: to the event's consumer span, if traced


def _consumer_span(message: pulsar.Message, change: CIDChange) -> AbstractContextManager[Span | None]:
    """The CONSUMER span of one event, continuing the producer's trace from the `traceparent` property."""
    if not tracing.enabled():
        return nullcontext()
    attributes = {
        **tracing.messaging_attributes("process", message.topic_name()),
        **tracing.event_attributes(str(change.event_id), change.event_type.value, str(change.entry_id),
                                   change.sequence),
        "cidsync.participant": change.participant,
        "cidsync.key_type": change.key_type.value,
        "cidsync.key_id": change.key_id,
    }  # fmt: skip
    topic = message.topic_name().rsplit("/", 1)[-1]
    return tracing.span(f"process {topic}", kind=SpanKind.CONSUMER, attributes=attributes,
                        parent=tracing.extract(message.properties()))  # fmt: skip


# The metrics' labels: fixed sets, never the free text of a reason.
PER_EVENT = {"mode": "per_event"}
BATCH = {"mode": "batch"}


def _about(message: pulsar.Message) -> dict[str, str]:
    """The event id for a JSON log line (the producer's property; absent on a message that is not an event)."""
    event_id = message.properties().get("event_id")
    return {"event_id": event_id} if event_id else {}


def _count_start(mode: dict[str, str], result: str, started: float) -> None:
    instruments.workflow_starts.add(1, {**mode, "result": result})
    instruments.start_duration.record(time.perf_counter() - started, mode)


class StarterHalted(RuntimeError):
    """Temporal refused a start for a reason no retry can fix; the messages are left in Pulsar."""


@dataclass
class StarterStats:
    consumed: int = 0
    started: int = 0
    already_started: int = 0
    already_marked: int = 0
    dead_lettered: int = 0
    retried: int = 0
    batches: int = 0


class EntryEventStarter:
    def __init__(
        self,
        temporal: Client,
        store: CIDStore,
        pulsar_client: pulsar_asyncio.Client,
        topics: Topics,
        config: StarterConfig,
    ) -> None:
        self.temporal = temporal
        self.store = store
        self.pulsar = pulsar_client
        self.topics = topics
        self.config = config
        self.stats = StarterStats()
        self.redelivery = RedeliveryPolicy(config.max_redeliveries, config.backoff_base, config.backoff_max)
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._batch_slots = asyncio.Semaphore(config.batches_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._receivers: dict[str, BatchConsumer] = {}  # by full topic name
        self._dead_letters: pulsar_asyncio.Producer | None = None
        self._batch: list[Batched] = []
        self._batch_generation = 0
        self._batch_timer: asyncio.Task[None] | None = None
        self._halted: BaseException | None = None

    async def check_search_attributes(self) -> None:
        """Fail at start, with the fix, when the namespace lacks our search attributes."""
        reply = await self.temporal.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.temporal.namespace)
        )
        missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in reply.custom_attributes]
        if missing:
            types = search_attribute_types()
            commands = "; ".join(
                f"temporal operator search-attribute create --name {n} --type {types[n]}" for n in missing
            )
            raise StarterHalted(
                f"namespace {self.temporal.namespace} lacks the search attributes {', '.join(missing)}: {commands}"
            )

    async def check_connected(self) -> None:
        """Readiness: subscribed to every entry topic, each with a live connection to the broker."""
        down = [topic for topic, receiver in self._receivers.items() if not receiver.connected()]
        if not self._receivers or down:
            raise ConnectionError(f"not consuming from {', '.join(down) or 'the entry topics yet'}")

    async def log_stats(self, every: timedelta) -> None:
        """The counters in the log every `every`, so an operator without a scraper still sees progress."""
        while True:
            await asyncio.sleep(every.total_seconds())
            logger.info("starter counters: %s", _counters(self.stats), extra={"counters": asdict(self.stats)})

    async def run(self, stop: asyncio.Event, *, connect_wait: timedelta = ROLE_CONNECT_WAIT) -> None:
        """Consume until `stop` is set, then drain: finish what is in flight, leave the rest unacked."""
        await self.check_search_attributes()
        await self.store.check_key_secret(wait=connect_wait, stop=stop)
        kind = pulsar.ConsumerType.KeyShared if self.config.key_shared else pulsar.ConsumerType.Shared
        self._dead_letters = await self.pulsar.create_producer(self.topics.dead_letter_topic, batching_enabled=False)
        # One consumer per topic, not one over all four: pulsar-lite's multi-topic consumer stalled a topic
        # (nothing more dispatched, nothing logged) in 7 of 39 drains of a fast-published backlog, and one
        # consumer per topic in none of 15 (issue 11's note has the reproduction).
        for topic in self.topics.entry_topics():
            consumer = await self.pulsar.subscribe(
                topic,
                self.config.subscription,
                consumer_type=kind,
                initial_position=pulsar.InitialPosition.Earliest,
                receiver_queue_size=max(1000, 2 * self.config.receive_max_messages),
                batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(
                    self.config.receive_max_messages, -1, int(self.config.receive_wait.total_seconds() * 1000)
                ),
            )
            self._receivers[topic] = BatchConsumer(consumer)
        loops = [asyncio.ensure_future(self._receive_from(r, stop)) for r in self._receivers.values()]
        try:
            # Until stop (or a halt) ends every loop; a loop that fails unexpectedly ends them all.
            await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for loop in loops:
                loop.cancel()  # a receive under way finishes in its thread; what it got stays unacked
            await asyncio.gather(*loops, return_exceptions=True)
            await self._drain()
        for loop in loops:
            if not loop.cancelled() and (error := loop.exception()) is not None:
                raise error
        if self._halted is not None:
            raise StarterHalted(f"Temporal refused to start workflows: {self._halted}") from self._halted

    async def _receive_from(self, receiver: BatchConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set() and self._halted is None:
            try:
                messages = await receiver.receive()
            except pulsar_asyncio.PulsarException as error:
                logger.warning("receive failed (%s); the client reconnects by itself", error)
                await asyncio.sleep(0.5)
                continue
            if messages:
                self.stats.consumed += len(messages)
                instruments.events_consumed.add(len(messages), {"topic": receiver.topic})
            for message in messages:
                await self._accept(message)

    async def _drain(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
        if self._batch:
            await self._send_batch()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        for receiver in self._receivers.values():
            await receiver.consumer.close()
        if self._dead_letters is not None:
            await self._dead_letters.flush()
            await self._dead_letters.close()

    def _spawn(self, work: Awaitable[None], slots: asyncio.Semaphore) -> None:
        """Run `work` as a task holding one of `slots`, which the caller acquired."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            slots.release()
            if not done.cancelled() and done.exception() is not None:
                logger.error("message handling failed unexpectedly", exc_info=done.exception())

        task.add_done_callback(finished)

    # --- one message ------------------------------------------------------------------------------------

    async def _accept(self, message: pulsar.Message) -> None:
        """Turn one received message into its change and pass it on; waits only for a free slot.

        Parsing runs here, inline: it is pure CPU, and a task per message cost more than the parse itself.
        """
        try:
            change = CIDChange.of_event(parse_event_json(message.data()), self.store.key_secret)
        except InvalidInput as error:
            await self._slots.acquire()
            self._spawn(self._dead_letter(message, error.summary(), INVALID_EVENT), self._slots)
            return
        if self.config.mode is Mode.BATCH and change.deletion_type is not DeletionType.WAITING_PERIOD:
            await self._add_to_batch(message, change)  # its mark is checked with the whole batch's
            return
        await self._slots.acquire()
        self._spawn(self._handle(message, change), self._slots)

    async def _handle(self, message: pulsar.Message, change: CIDChange) -> None:
        with _consumer_span(message, change):
            try:
                if await self.store.ingestion.is_marked(change.participant, change.key_type, str(change.event_id)):
                    self.stats.already_marked += 1
                    instruments.events_already_applied.add(1)
                    self._ack(message)
                    return
                await self._start(change)  # under the consumer span: the workflow continues this trace
                self._ack(message)
            except TRANSIENT as error:
                await self._retry_later(message, error)

    def _receiver_of(self, message: pulsar.Message) -> BatchConsumer:
        return self._receivers[message.topic_name()]

    def _ack(self, message: pulsar.Message) -> None:
        self._receiver_of(message).acknowledge(message)

    async def _start(self, change: CIDChange) -> None:
        workflow: Callable[..., Any]
        argument: Any
        if change.event_type is EventType.CREATED:
            workflow, argument = CreateCID.run, change
        elif change.event_type is EventType.UPDATED:
            workflow, argument = UpdateCID.run, change
        else:
            workflow, argument = DeleteCID.run, DeleteCIDInput(change=change, waiting_period=self.config.waiting_period)
        started = time.perf_counter()
        try:
            await self.temporal.start_workflow(
                workflow,
                argument,
                id=event_workflow_id(change),
                task_queue=self.config.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=event_search_attributes(change),
                static_summary=event_summary(change),
            )
            self.stats.started += 1
            _count_start(PER_EVENT, "started", started)
        except WorkflowAlreadyStartedError:
            # Started before (it may even have finished): Temporal has it, which is all we need.
            self.stats.already_started += 1
            _count_start(PER_EVENT, "already_started", started)

    async def _retry_later(self, message: pulsar.Message, error: BaseException) -> None:
        consumer = self._receiver_of(message).consumer
        decision = self.redelivery.decide(error, message.redelivery_count())
        if decision.action is Action.HALT:
            logger.error("Temporal refused a start (%s): halting; the message stays in Pulsar", error,
                         extra=_about(message))  # fmt: skip
            self._halted = error
            await consumer.negative_acknowledge(message)
            return
        if decision.action is Action.DEAD_LETTER:
            await self._dead_letter(message, decision.reason, REDELIVERIES_EXHAUSTED)
            return
        self.stats.retried += 1
        instruments.events_retried.add(1)
        delay = decision.delay.total_seconds()
        logger.warning("transient failure (%r); redelivery in %.1f s", error, delay, extra=_about(message))
        # Scheduled, not awaited: the slot is free for other messages meanwhile.
        asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(consumer.negative_acknowledge(message))
        )

    async def _dead_letter(self, message: pulsar.Message, reason: str, kind: str) -> None:
        """`reason` (the full text) goes with the message; `kind` (a fixed set) labels the metric."""
        assert self._dead_letters is not None
        properties = dead_letter_properties(
            message.properties(), reason=reason, kind=kind, topic=message.topic_name(),
            message_id=str(message.message_id()), redelivery_count=message.redelivery_count(),
        )  # fmt: skip
        await self._dead_letters.send(
            message.data(), properties=properties, partition_key=message.partition_key() or None
        )
        self.stats.dead_lettered += 1
        instruments.events_dead_lettered.add(1, {"reason": kind})
        logger.warning("dead-lettered %s from %s: %s", message.message_id(), message.topic_name(), reason[:300],
                       extra=_about(message))  # fmt: skip
        self._ack(message)

    # --- batch mode -------------------------------------------------------------------------------------

    async def _add_to_batch(self, message: pulsar.Message, change: CIDChange) -> None:
        if not self._batch:
            # The batch's own timer, started with its first event: a batch with nothing after it goes
            # when it is due, not when the next message happens to arrive (possibly hours later).
            self._batch_generation += 1
            self._batch_timer = asyncio.ensure_future(self._flush_when_due(self._batch_generation))
        link: Link | None = None
        with _consumer_span(message, change) as span:
            if span is not None:
                link = Link(span.get_span_context())
        self._batch.append((message, change, link))
        if len(self._batch) >= self.config.batch_max_events:
            await self._send_batch()

    async def _send_batch(self) -> None:
        """Start the current batch as a task once a batch slot is free. It is taken before the wait: the
        other topics' receive loops add to a new batch meanwhile."""
        batch, self._batch = self._batch, []
        await self._batch_slots.acquire()
        self._spawn(self._start_batch(batch), self._batch_slots)

    async def _flush_when_due(self, generation: int) -> None:
        await asyncio.sleep(self.config.batch_max_wait.total_seconds())
        if not (self._batch and self._batch_generation == generation):
            return  # the batch filled up and went already
        await self._send_batch()

    async def _start_batch(self, batch: list[Batched]) -> None:
        """Drop what is marked applied (one pipelined look-up for the whole batch), start one run for the
        rest, then ack them all. On a transient failure nothing is acked and every message is retried.

        Traced, the batch is a trace of its own whose root links to each event's consumer span (OpenTelemetry's
        messaging conventions for batch processing): one run serves events of many traces."""
        links = [link for _, _, link in batch if link is not None]
        with tracing.span("start batch", kind=SpanKind.PRODUCER, links=links,
                          attributes={"messaging.batch.message_count": len(batch)}):  # fmt: skip
            try:
                marked = await self.store.ingestion.marked([change for _, change, _ in batch])
                changes = [change for (_, change, _), done in zip(batch, marked, strict=True) if not done]
                if changes:
                    await self._start_changes(changes)
            except TRANSIENT as error:
                for message, _, _ in batch:
                    await self._retry_later(message, error)
                return
        self.stats.already_marked += sum(marked)
        instruments.events_already_applied.add(sum(marked))
        for message, _, _ in batch:
            self._ack(message)

    async def _start_changes(self, changes: list[CIDChange]) -> None:
        instruments.batch_size.record(len(changes))
        started = time.perf_counter()
        try:
            await self.temporal.start_workflow(
                ApplyCIDBatch.run,
                CIDBatch(changes=changes),
                id=batch_workflow_id(changes),
                task_queue=self.config.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=batch_search_attributes(changes),
                static_summary=f"batch of {len(changes)} entry events",
            )
            self.stats.batches += 1
            _count_start(BATCH, "started", started)
        except WorkflowAlreadyStartedError:
            self.stats.already_started += 1
            _count_start(BATCH, "already_started", started)


def _counters(stats: StarterStats) -> str:
    return " ".join(f"{name}={value}" for name, value in asdict(stats).items())


async def run_starter(
    temporal: Client, settings: Settings, config: StarterConfig, stop: asyncio.Event, health: Health | None = None
) -> StarterStats:
    """Run until `stop` is set, then drain. Builds the clients it needs and closes them in order (docs/stack.md):
    the Pulsar consumer and client first, then the store. `health` gets a probe per dependency."""
    if settings.key_secret is None:
        logger.warning("CIDSYNC_KEY_SECRET is not set: keys are hashed with the development secret")
    store = CIDStore(redis_client(settings.require("redis_url")), settings.key_secret_bytes)
    pulsar = pulsar_client(settings.require("pulsar_url"))
    starter = EntryEventStarter(temporal, store, pulsar, Topics(namespace=settings.pulsar_namespace), config)
    if health is not None:
        health.add("temporal", temporal.service_client.check_health)
        health.add("redis", store.ping)
        health.add("pulsar", starter.check_connected)
    logging_stats = asyncio.ensure_future(starter.log_stats(config.log_stats_every))
    try:
        await starter.run(stop)
    finally:
        logging_stats.cancel()
        await pulsar.close()
        await store.close()
    logger.info("starter stopped: %s", _counters(starter.stats), extra={"counters": asdict(starter.stats)})
    return starter.stats
