"""Reconciliation's repair primitive: compare-and-set, so a DICT snapshot never beats a newer local change.
On a real Redis and on a real Redis Cluster (`store_url`)."""

import uuid
from collections.abc import AsyncIterator

import pytest

from cidsync.change import CIDChange
from cidsync.cid import vsync
from cidsync.entry import KeyType
from cidsync.key_id import key_id
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys
from cidsync.store.models import CIDHolder, RepairStatus
from tests.helpers.changes import change

SECRET = b"repair-secret"
KEY = "+5511987654321"
A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[CIDStore]:
    client = redis_client(store_url)
    yield CIDStore(client, SECRET)
    await client.aclose()


def event(pair: PairKeys, sequence: int, cid: str | None) -> CIDChange:
    return change(pair.participant, pair.key_type, KEY, sequence, cid, secret=SECRET, event_id=uuid.uuid4())


async def consistent(store: CIDStore, pair: PairKeys) -> set[str]:
    """I1 holds; returns the set."""
    cids = await store.view.cids(pair.participant, pair.key_type)
    assert await store.view.vsync(pair.participant, pair.key_type) == vsync(cids)
    return cids


@pytest.fixture
def pair(participant: str) -> PairKeys:
    return PairKeys(participant, KeyType.PHONE)


async def test_a_key_unknown_locally_is_added_at_sequence_zero(store: CIDStore, pair: PairKeys) -> None:
    kid = key_id(SECRET, pair.key_type, KEY)
    assert await store.reconciliation.repair(pair, kid, "", A) is RepairStatus.REPAIRED
    assert await consistent(store, pair) == {A}
    assert await store.reconciliation.holder_of_cid(pair, A) == CIDHolder(key_id=kid, entry_id="")
    # The first real event for the key (any sequence >= 1) still applies over the repair.
    await store.ingestion.apply(event(pair, 1, B))
    assert await consistent(store, pair) == {B}


async def test_a_newer_local_change_is_never_overwritten_by_the_dict_snapshot(store: CIDStore, pair: PairKeys) -> None:
    kid = key_id(SECRET, pair.key_type, KEY)
    await store.ingestion.apply(event(pair, 5, A))
    seen = await store.ingestion.key_state(pair, kid)  # the repair decides on this state: DICT says B
    await store.ingestion.apply(event(pair, 6, C))  # ...and meanwhile core's newer change arrives
    assert await store.reconciliation.repair(pair, kid, seen, B) is RepairStatus.CHANGED
    assert await consistent(store, pair) == {C}


async def test_a_repair_keeps_the_sequence_so_later_events_win_and_older_ones_stay_stale(
    store: CIDStore, pair: PairKeys
) -> None:
    kid = key_id(SECRET, pair.key_type, KEY)
    await store.ingestion.apply(event(pair, 5, A))
    assert (
        await store.reconciliation.repair(pair, kid, await store.ingestion.key_state(pair, kid), B)
        is RepairStatus.REPAIRED
    )
    assert await consistent(store, pair) == {B}
    await store.ingestion.apply(event(pair, 5, A))  # a redelivered old event
    assert await consistent(store, pair) == {B}
    await store.ingestion.apply(event(pair, 7, C))
    assert await consistent(store, pair) == {C}


async def test_a_cid_dict_lacks_is_removed_through_its_key(store: CIDStore, pair: PairKeys) -> None:
    await store.ingestion.apply(event(pair, 3, A))
    holder = await store.reconciliation.holder_of_cid(pair, A)
    assert holder is not None
    kid = holder.key_id
    assert kid == key_id(SECRET, pair.key_type, KEY)
    assert (
        await store.reconciliation.repair(pair, kid, await store.ingestion.key_state(pair, kid), None)
        is RepairStatus.REPAIRED
    )
    assert await consistent(store, pair) == set()
    assert await store.reconciliation.holder_of_cid(pair, A) is None
    assert await store.ingestion.key_state(pair, kid) == f"{3:019d}|"  # a tombstone with the key's own sequence
