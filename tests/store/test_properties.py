"""Invariants I1-I3 of docs/design.md §4, property-tested against the real Redis, and against a real
3-primary Redis Cluster (`store_url`).

I1: the VSync always equals the XOR of the stored CIDs. I2: a key has at most one current CID.
I3: any permutation and duplication of an event history gives the state of applying it once in
sequence order.
"""

import asyncio
import hashlib
import uuid
from dataclasses import dataclass

import redis.asyncio as redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidsync.change import CIDChange
from cidsync.cid import vsync
from cidsync.entry import KeyType
from cidsync.key_id import key_id
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys
from cidsync.store.models import ApplyStatus
from tests.helpers.changes import change as make_change
from tests.helpers.changes import entry_id_of
from tests.helpers.servers import RedisServer

SECRET = b"test-secret"
KEYS = ["+5511900000001", "+5511900000002", "+5511900000003", "+5511900000004"]


def cid_of(key: str, variant: int) -> str:
    """A CID of `key`: the key is hashed into its CID, so a CID never belongs to two keys. Small
    variants repeat often, so an update that keeps the CID is exercised too."""
    return hashlib.sha256(f"{key}:{variant}".encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    key: str
    sequence: int
    cid: str | None  # None: a delete


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """Each key's own strictly increasing sequences; creations, updates and deletes mixed."""
    steps = []
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True)):
        sequences = sorted(draw(st.sets(st.integers(1, 2**63 - 1), min_size=1, max_size=6)))
        for sequence in sequences:
            deleted = draw(st.booleans()) and draw(st.booleans())  # about one in four is a delete
            steps.append(Step(key, sequence, None if deleted else cid_of(key, draw(st.integers(0, 3)))))
    return steps


def expected_state(history: list[Step]) -> set[str]:
    """Applying the history once, in sequence order, per key: the last step of each key decides."""
    last: dict[str, Step] = {}
    for step in sorted(history, key=lambda s: s.sequence):
        if step.key not in last or step.sequence > last[step.key].sequence:
            last[step.key] = step
    return {s.cid for s in last.values() if s.cid is not None}


async def _apply_all(url: str, participant: str, history: list[Step], deliveries: list[int], concurrent: bool) -> None:
    client = redis_client(url)
    store = CIDStore(client, SECRET)
    events = {i: str(uuid.uuid4()) for i in range(len(history))}

    def change(i: int) -> CIDChange:
        step = history[i]
        return make_change(
            participant, KeyType.PHONE, step.key, step.sequence, step.cid, secret=SECRET, event_id=events[i]
        )

    try:
        if concurrent:
            await asyncio.gather(*(store.ingestion.apply(change(i)) for i in deliveries))
        else:
            for i in deliveries:
                result = await store.ingestion.apply(change(i))
                # I1 after every single change, not just at the end.
                assert result.vsync == vsync(await store.view.cids(participant, KeyType.PHONE))
        stored = await store.view.cids(participant, KeyType.PHONE)
        assert stored == expected_state(history)  # I3
        assert await store.view.vsync(participant, KeyType.PHONE) == vsync(stored)  # I1
        assert len(stored) <= len({s.key for s in history})  # I2: at most one CID a key
        # The reverse index maps exactly the stored CIDs, each to the key that holds it.
        last = {s.key: s for s in sorted(history, key=lambda s: s.sequence)}
        holders = {
            s.cid: f"{key_id(SECRET, KeyType.PHONE, key)}|{entry_id_of(key)}" for key, s in last.items() if s.cid
        }
        index = await client.hgetall(PairKeys(participant, KeyType.PHONE).by_cid)
        assert index == {k.encode(): v.encode() for k, v in holders.items()}
    finally:
        await client.aclose()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), data=st.data(), concurrent=st.booleans())
def test_any_permutation_with_duplicates_gives_the_in_order_state(
    store_url: str, history: list[Step], data: st.DataObject, concurrent: bool
) -> None:
    deliveries = list(range(len(history)))
    deliveries += data.draw(st.lists(st.sampled_from(deliveries), max_size=len(history)), label="duplicates")
    deliveries = data.draw(st.permutations(deliveries), label="arrival order")
    participant = f"{uuid.uuid4().int % 10**8:08d}"
    asyncio.run(_apply_all(store_url, participant, history, deliveries, concurrent))


async def test_older_events_are_reported_stale_and_a_repeated_change_duplicate(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = CIDStore(client, SECRET)
    participant = f"{uuid.uuid4().int % 10**8:08d}"
    e0, e1, e2, e3 = (str(uuid.uuid4()) for _ in range(4))

    def change(sequence: int, cid: str | None, event_id: str) -> CIDChange:
        return make_change(
            participant, KeyType.EMAIL, "ana@exemplo.com", sequence, cid, secret=SECRET, event_id=event_id
        )

    try:
        first = await store.ingestion.apply(change(10, "a" * 64, e1))
        again = await store.ingestion.apply(change(10, "a" * 64, e1))
        older = await store.ingestion.apply(change(9, "b" * 64, e0))
        deleted = await store.ingestion.apply(change(11, None, e2))
        assert (first.status, again.status, older.status, deleted.status) == (
            ApplyStatus.APPLIED,
            ApplyStatus.DUPLICATE,
            ApplyStatus.STALE,
            ApplyStatus.APPLIED,
        )
        assert again.vsync == "a" * 64
        # Another CID under a sequence already applied is no repeat: it lost, as an older one does.
        clash = await store.ingestion.apply(change(10, "d" * 64, str(uuid.uuid4())))
        assert clash.status is ApplyStatus.STALE
        # A delete applied again is a repeat too (its state is the sequence and no CID).
        assert (await store.ingestion.apply(change(11, None, e2))).status is ApplyStatus.DUPLICATE
        assert first.vsync == "a" * 64
        assert deleted.vsync == "0" * 64
        assert deleted.previous_sequence == 10
        # The tombstone keeps its sequence: a late creation older than the delete stays out.
        late = await store.ingestion.apply(change(10, "c" * 64, e3))
        assert late.status is ApplyStatus.STALE
        assert await store.view.cids(participant, KeyType.EMAIL) == set()
        assert await store.ingestion.is_marked(participant, KeyType.EMAIL, e3)
        # Nothing of the key is stored in clear.
        assert not [k async for k in client.scan_iter(match="*ana@exemplo*")]
        for name in [k async for k in client.scan_iter(match=f"{{cid:{participant}:*")]:
            value = await client.dump(name)
            assert value is None or b"ana@exemplo" not in value
    finally:
        await client.aclose()


async def _apply_in_batches(url: str, prefix: str, history: list[Step], batches: list[list[int]]) -> None:
    """Each key in a pair of its own (participant `prefix` + its index), so a batch spans pairs: on a
    cluster, slots and nodes."""
    client = redis_client(url)
    store = CIDStore(client, SECRET)
    events = {i: uuid.uuid5(uuid.NAMESPACE_OID, f"event-{i}") for i in range(len(history))}
    participant = {key: f"{prefix}{index}" for index, key in enumerate(KEYS)}
    try:
        for batch in batches:
            steps = [(history[i], events[i]) for i in batch]
            changes = [
                make_change(participant[s.key], KeyType.PHONE, s.key, s.sequence, s.cid, secret=SECRET, event_id=e)
                for s, e in steps
            ]
            await store.ingestion.apply_batch(changes)
        for key in {step.key for step in history}:
            stored = await store.view.cids(participant[key], KeyType.PHONE)
            assert stored == expected_state([step for step in history if step.key == key])
            assert await store.view.vsync(participant[key], KeyType.PHONE) == vsync(stored)
    finally:
        await client.aclose()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), data=st.data())
def test_batches_regrouped_on_redelivery_give_the_in_order_state(
    store_url: str, history: list[Step], data: st.DataObject
) -> None:
    """Batch mode: however events are grouped, and regrouped when a batch is redelivered (some events
    again, in other company and order), the state is that of applying the history once in order."""
    indices = data.draw(st.permutations(list(range(len(history)))), label="first delivery order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(indices) - 1)), max_size=5), label="cuts"))
    batches = [indices[a:b] for a, b in zip([0, *cuts], [*cuts, len(indices)], strict=True) if indices[a:b]]
    redelivered = data.draw(
        st.lists(st.lists(st.sampled_from(indices), min_size=1, max_size=8), max_size=4), label="redelivered batches"
    )
    order = data.draw(st.permutations(batches + redelivered), label="batch order")
    prefix = f"{uuid.uuid4().int % 10**7:07d}"
    asyncio.run(_apply_in_batches(store_url, prefix, history, list(order)))
