"""An ingestion pipeline on the session's real servers: worker and starter in this process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from cidsync.entry import KeyType
from cidsync.events import DeletionType, EntryEvent
from cidsync.producer import EntryEventProducer, build_event
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.topics import Topics
from cidsync_tooling.pacing import paced
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.simulator.dict_first import DictFirst
from cidsync_tooling.synthetic import final_vsyncs, synthetic_history
from starters.entry_events import EntryEventStarter
from starters.options import Mode, StarterConfig
from tests.helpers.eventually import eventually
from tests.helpers.servers import KEY_SECRET
from tests.helpers.workers import TEST_VERSION, made_current
from workers.cid_worker import build_worker
from workers.options import WorkerOptions

SECRET = KEY_SECRET


@dataclass
class Pipeline:
    topics: Topics
    store: CIDStore
    starter: EntryEventStarter
    participants: list[str]


def unique_participants(count: int) -> list[str]:
    return [f"{uuid.uuid4().int % 10**8:08d}" for _ in range(count)]


def history_events(count: int, participants: list[str], seed: int) -> list[EntryEvent]:
    """A valid history as v1 events, sequences in history order."""
    rng_sequence = 1_000
    events = []
    for change in synthetic_history(count, participants, seed=seed):
        rng_sequence += 1
        events.append(
            build_event(
                change.event_type, change.entry, "e2e", deletion_type=change.deletion_type, sequence=rng_sequence
            )
        )
    return events


def expected_vsyncs(events: list[EntryEvent]) -> dict[tuple[str, KeyType], tuple[int, str]]:
    """Independent of the pipeline: apply in sequence order in memory, every delete included."""
    return final_vsyncs((event.event_type, event.entry) for event in sorted(events, key=lambda e: e.sequence))


async def local_vsyncs(store: CIDStore, participants: list[str]) -> dict[tuple[str, KeyType], tuple[int, str]]:
    found = {}
    for participant in participants:
        for key_type in KeyType:
            count = await store.view.count(participant, key_type)
            if count:
                found[(participant, key_type)] = (count, await store.view.vsync(participant, key_type))
    return found


APPLY_TIMEOUT = 120.0
# A nacked event comes back this long after its backoff: a fault here (a Redis primary killed, Temporal
# refusing) is over within seconds, where the starter's default waits Pulsar's minute. Rounds 5 s apart are
# far from the 100 ms at which pulsar-lite lost redeliveries (StarterConfig.nack_delay).
NACK_DELAY = timedelta(seconds=5)


async def wait_for_vsyncs(store: CIDStore, participants: list[str], expected: object) -> None:
    """Wait until the store shows the expected state (or fail, showing what it holds). The store has no
    change feed to wait on; polling it adds no timing assumption."""
    await eventually(
        lambda: local_vsyncs(store, participants),
        lambda seen: seen == expected,
        "the store's VSyncs as expected",
        timeout=APPLY_TIMEOUT,
    )


@contextlib.asynccontextmanager
async def running_pipeline(
    env: WorkflowEnvironment,
    redis_url: str,
    pulsar_url: str,
    *,
    mode: Mode = Mode.PER_EVENT,
    participants: int = 2,
    key_shared: bool = False,  # Shared on the embedded broker, as the dev stack (its spec says why)
) -> AsyncIterator[Pipeline]:
    queue = f"e2e-{uuid.uuid4()}"
    topics = Topics(namespace=f"public/e2e{uuid.uuid4().hex[:10]}")
    store = CIDStore(redis_client(redis_url), SECRET)
    pulsar = pulsar_client(pulsar_url)
    config = StarterConfig(
        task_queue=queue,
        waiting_period=timedelta(seconds=2),
        mode=mode,
        backoff_base=timedelta(milliseconds=200),
        batch_max_wait=timedelta(milliseconds=100),
        key_shared=key_shared,
        nack_delay=NACK_DELAY,
    )
    starter = EntryEventStarter(env.client, store, pulsar, topics, config)
    stop = asyncio.Event()
    worker = build_worker(env.client, store, queue, WorkerOptions(), TEST_VERSION)
    async with made_current(env.client, worker, TEST_VERSION):
        running = asyncio.ensure_future(starter.run(stop))
        try:
            yield Pipeline(topics, store, starter, unique_participants(participants))
        finally:
            stop.set()
            await running
            await pulsar.close()
            await store.close()


def shuffled_with_duplicates(events: list[EntryEvent], seed: int, duplicates: int) -> list[EntryEvent]:
    rng = random.Random(seed)
    delivered = events + rng.sample(events, duplicates)
    rng.shuffle(delivered)
    return delivered


def immediate(events: list[EntryEvent]) -> list[EntryEvent]:
    """Waiting-period deletes as immediate ones: DICT's side of a 30-day wait is not what is tested here."""
    return [
        build_event(e.event_type, e.entry, "e2e", deletion_type=DeletionType.IMMEDIATE, sequence=e.sequence)
        if e.deletion_type is DeletionType.WAITING_PERIOD
        else e
        for e in events
    ]


@dataclass
class Flow:
    """Events published as core does: each change made in DICT first, then its event (`flow`, through the
    dev stack's `DictFirst`); `landed` waits until the pipeline has applied them (an event's idempotency
    mark is set with its change)."""

    admin: SimulatorAdmin
    producer: EntryEventProducer
    store: CIDStore
    participant: str

    async def mirror_to_dict(self, event: EntryEvent) -> None:
        core = DictFirst(self.admin)
        assert not await core.refused([event]), core.refusals

    async def flow(
        self, events: list[EntryEvent], per_second: float, until: asyncio.Event | None = None
    ) -> list[EntryEvent]:
        """Publish `events` in commit order (DICT first, then the event), or until `until` is set, and
        return those published: traffic that must outlast something is stopped by it, not by a clock."""
        published: list[EntryEvent] = []
        async for (event,) in paced(events, per_second):
            if until is not None and until.is_set():
                break
            await self.mirror_to_dict(event)
            await self.producer.publish_event(event)
            published.append(event)
        return published

    async def landed(self, events: list[EntryEvent]) -> None:
        async with asyncio.timeout(60):
            for event in events:
                mark = (self.participant, event.entry.key_type, str(event.event_id))
                while not await self.store.ingestion.is_marked(*mark):  # noqa: ASYNC110 (no change feed)
                    await asyncio.sleep(0.1)
