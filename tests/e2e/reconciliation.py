"""Helpers for reconciliation end to end: a worker with every reconciliation activity, on the real
servers, and a pair seeded identically in DICT (the simulator) and in the local store."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pulsar
import pulsar.asyncio as pulsar_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.core_events import CoreEventsPublisher
from cidsync.bridge.client import BridgeClient
from cidsync.change import CIDChange
from cidsync.entry import Entry, KeyType
from cidsync.producer import EntryEventProducer
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.topics import Topics
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.synthetic import pair_random, synthetic_entry
from starters.options import Mode
from tests.e2e.harness import Flow, Pipeline, running_pipeline
from tests.helpers.eventually import eventually
from tests.helpers.servers import KEY_SECRET
from tests.helpers.workers import TEST_VERSION, made_current
from workers.cid_worker import Reconciliation, build_worker
from workers.options import WorkerOptions
from workflows.reconcile_vsync import Progress, ReconcileVSync

SECRET = KEY_SECRET


@dataclass
class Running:
    queue: str
    store: CIDStore
    bridge: BridgeClient
    topics: Topics
    core_events: pulsar_asyncio.Consumer


@asynccontextmanager
async def reconciliation_worker(
    env: WorkflowEnvironment, redis_url: str, pulsar_url: str, bridge_address: str, secret: bytes = SECRET
) -> AsyncIterator[Running]:
    queue = f"reconcile-{uuid.uuid4()}"
    topics = Topics(namespace=f"public/recon{uuid.uuid4().hex[:10]}")
    store = CIDStore(redis_client(redis_url), secret)
    bridge = BridgeClient(bridge_address)
    pulsar_ = pulsar_client(pulsar_url)
    consumer = await pulsar_.subscribe(
        topics.full(topics.core_events),
        f"core-{uuid.uuid4()}",
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    publisher = await CoreEventsPublisher.create(store, pulsar_, topics)
    try:
        reconciliation = Reconciliation.of(store, bridge, publisher)
        worker = build_worker(env.client, store, queue, WorkerOptions(), TEST_VERSION, reconciliation)
        async with made_current(env.client, worker, TEST_VERSION):
            yield Running(queue, store, bridge, topics, consumer)
    finally:
        await publisher.close()
        await pulsar_.close()
        await bridge.close()
        await store.close()


def pair_entries(participant: str, key_type: KeyType, count: int, seed: int) -> list[Entry]:
    """The entries the simulator's `load_synthetic` makes from the same pair and seed (`pair_random`): two
    tests whose plain seeds happened to coincide once collided on an entry id in the session's simulator."""
    rng = pair_random(participant, key_type, seed)
    return [synthetic_entry(rng, participant, key_type) for _ in range(count)]


async def apply_locally(store: CIDStore, entries: list[Entry], sequence: int = 1) -> None:
    changes = [CIDChange.creation(e, sequence=sequence, key_secret=store.key_secret) for e in entries]
    for start in range(0, len(changes), 1000):
        await store.ingestion.apply_batch(changes[start : start + 1000])


async def seed_pair(admin: SimulatorAdmin, store: CIDStore, entries: list[Entry]) -> None:
    """The same entries active in DICT and in the local store: the pair starts in sync."""
    await admin.load(entries)
    await apply_locally(store, entries)


async def until(handle: WorkflowHandle[ReconcileVSync, object], check: Callable[[Progress], bool]) -> Progress:
    return await eventually(
        lambda: handle.query(ReconcileVSync.progress), check, "the reconciliation's progress", every=0.02
    )


async def core_messages(consumer: pulsar_asyncio.Consumer, count: int) -> list[pulsar.Message]:
    """The next `count` messages, acknowledged (a receive is never cancelled: docs/stack.md)."""
    received = []
    async with asyncio.timeout(30):
        for _ in range(count):
            message = await consumer.receive()
            await consumer.acknowledge(message)
            received.append(message)
    return received


@dataclass
class Flowing:
    pipeline: Pipeline
    running: Running
    core: Flow  # publishes as core does: DICT first, then the event


@asynccontextmanager
async def events_and_reconciliation(
    env: WorkflowEnvironment, redis_url: str, pulsar_url: str, bridge_address: str, admin: SimulatorAdmin
) -> AsyncIterator[Flowing]:
    """A batch-mode ingestion pipeline for one participant, a worker with every reconciliation activity
    (the follower's included), and a producer that changes DICT before it publishes each event."""
    async with (
        running_pipeline(env, redis_url, pulsar_url, mode=Mode.BATCH, participants=1) as pipeline,
        reconciliation_worker(env, redis_url, pulsar_url, bridge_address) as running,
        EntryEventProducer(pulsar_client(pulsar_url), topics=pipeline.topics, owns_client=True) as producer,
    ):
        await producer.start()
        yield Flowing(pipeline, running, Flow(admin, producer, pipeline.store, pipeline.participants[0]))
