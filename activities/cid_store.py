"""Activities on the CID store: thin wrappers of `cidsync.store.cid_store.CIDStore`, one side effect each.

The store itself (key layout, key ids, Lua scripts, models) is the library in `cidsync/store/`, shared
with the starter and the CLI. What crosses these activities is the minimal change (ids, key id, CID,
sequence) and counts: never a PIX key or an entry (docs/design.md §5).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from cidsync.change import CIDBatch, CIDChange
from cidsync.entry import KeyType, PairRef
from cidsync.key_id import KeyId
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import RECONCILIATION_TTL_SECONDS, PairKeys
from cidsync.store.models import ApplyResult, BatchResult, LocalVSync, PairVerification, VerificationRecord
from cidsync.telemetry import instruments


class KeySequenceQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    key_id: KeyId


class WatchRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    ttl_seconds: int = RECONCILIATION_TTL_SECONDS


class PairsRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    pairs: list[PairRef]


def _keys(pair: PairRef | WatchRequest | KeySequenceQuery) -> PairKeys:
    return PairKeys(pair.participant, pair.key_type)


class StoreActivities:
    """Built once in the worker with the store injected."""

    def __init__(self, store: CIDStore) -> None:
        self.store = store

    @activity.defn(name="apply_cid_change")
    async def apply_change(self, change: CIDChange) -> ApplyResult:
        result = await self.store.ingestion.apply(change)
        instruments.store_changes.add(1, {"outcome": result.status.value})
        return result

    @activity.defn(name="apply_cid_batch")
    async def apply_batch(self, batch: CIDBatch) -> BatchResult:
        result = await self.store.ingestion.apply_batch(batch.changes)
        instruments.store_changes.add(result.applied, {"outcome": "applied"})
        instruments.store_changes.add(result.stale, {"outcome": "stale"})
        instruments.store_changes.add(result.duplicate, {"outcome": "duplicate"})
        return result

    @activity.defn(name="key_sequence")
    async def key_sequence(self, query: KeySequenceQuery) -> int | None:
        """The sequence last applied for a key (a delete included), or None if never seen."""
        return await self.store.ingestion.key_sequence(_keys(query), query.key_id)

    @activity.defn(name="local_vsync")
    async def local_vsync(self, pair: PairRef) -> LocalVSync:
        return await self.store.view.local_vsync(_keys(pair))

    @activity.defn(name="begin_watch")
    async def begin_watch(self, request: WatchRequest) -> None:
        await self.store.reconciliation.begin_watch(_keys(request), request.ttl_seconds)

    @activity.defn(name="end_watch")
    async def end_watch(self, pair: PairRef) -> None:
        await self.store.reconciliation.end_watch(_keys(pair))

    @activity.defn(name="record_verification")
    async def record_verification(self, record: VerificationRecord) -> None:
        await self.store.view.record_verification(record)

    @activity.defn(name="last_verifications")
    async def last_verifications(self, request: PairsRequest) -> list[PairVerification]:
        return await self.store.view.last_verifications([_keys(pair) for pair in request.pairs])
