"""Reconciliation's repair step: the diff's CIDs, applied to the CID store in bounded batches.

A DICT-only CID is fetched from DICT (`GetEntryByCid`) and added to its key; a local-only CID is removed
from its key. Each repair is the store's compare-and-set (`CIDStore.repair`), which refuses any key an
event changed since the reconciliation began, and writes the notification for core into the run's outbox
in the same atomic step (published by `publish_outbox`). So nothing here can lose a notification or
overwrite a newer local change.

The batch is read from the diff's scratch set without removing it (SRANDMEMBER) and each CID is removed
from the set only once handled; a retry after a crash redoes at most the CIDs in flight, and redoing one is
harmless (the compare-and-set sees the repair already made). Only counts go back to the workflow.

The entries cross this activity from the Bridge into Redis (the outbox, for core) and never into workflow
history: the input names the round's scratch keys, the result is counts, and no failure message carries
an entry (DESIGN.md §5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bridge import temporal_error
from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import EntryByCid
from cidsync.cid import cid as cid_of
from cidsync.core_events import entry_added, entry_removed
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import RepairSide, Scratch
from cidsync.store.models import RepairStatus

logger = logging.getLogger(__name__)

# A retry-after up to this long is waited out inside the activity (heartbeating); a longer one ends the
# attempt with `next_retry_delay`, so Temporal waits durably instead of a worker slot.
MAX_IN_ACTIVITY_WAIT = timedelta(seconds=60)
# DICT answered an entry that does not hash to the CID asked for: never stored, and no retry can help.
DICT_INCONSISTENT = "DictInconsistent"


class RepairInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    scratch: Scratch
    side: RepairSide
    reconciliation_id: str
    batch_size: int = 500
    concurrency: int = 8  # GetEntryByCid calls in flight
    entries_per_minute: int = 1_200  # DICT's refill rate for GetEntryByCid (DESIGN.md §1)


class RepairResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    repaired: int  # the store now holds DICT's answer for these CIDs (a notification is in the outbox)
    skipped: int  # the key changed locally since the reconciliation began: left for the next verification
    vanished: int  # DICT no longer has the entry, or the CID already left the local set
    remaining: int  # CIDs of this side still to handle


class _Pacer:
    """Shared by the calls of one batch. Until DICT refuses, calls go as fast as they come (its bucket
    allows a burst of 1,200). After a refusal, every call waits DICT's retry-after and then gets its own
    slot at DICT's refill rate, so the calls in flight do not all wake at once into a bucket with one
    token and get refused again."""

    def __init__(self, per_minute: int) -> None:
        self.spacing = 60.0 / per_minute
        self.limited = False
        self.next_slot = 0.0

    def refused(self, retry_after: float) -> None:
        self.limited = True
        self.next_slot = max(self.next_slot, time.monotonic() + retry_after)

    async def wait(self) -> None:
        if not self.limited:
            return
        slot = max(self.next_slot, time.monotonic())
        self.next_slot = slot + self.spacing
        while (delay := slot - time.monotonic()) > 0:
            activity.heartbeat()
            await asyncio.sleep(min(delay, 5.0))


class RepairActivities:
    """Built once in the worker with the CID store and the Bridge client injected."""

    def __init__(self, store: CIDStore, bridge: BridgeClient) -> None:
        self.store = store
        self.bridge = bridge

    @activity.defn(name="repair_cids")
    async def repair_cids(self, request: RepairInput) -> RepairResult:
        scratch, side = request.scratch, request.side
        batch = await self.store.to_repair(scratch, side, request.batch_size)
        pacer = _Pacer(request.entries_per_minute)
        limit = asyncio.Semaphore(request.concurrency)
        counts = {status: 0 for status in ("repaired", "skipped", "vanished")}

        async def handle(value: str) -> None:
            async with limit:
                if request.side is RepairSide.DICT_ONLY:
                    status = await self._add(request, value, pacer)
                else:
                    status = await self._remove(request, value)
                counts[status] += 1
                await self.store.repaired(scratch, side, value)
                activity.heartbeat(counts)

        await asyncio.gather(*(handle(value) for value in batch))
        return RepairResult(**counts, remaining=await self.store.left_to_repair(scratch, side))

    async def _entry(self, participant: str, value: str, pacer: _Pacer) -> EntryByCid | None:
        while True:
            await pacer.wait()
            try:
                return await self.bridge.get_entry_by_cid(participant, value)
            except errors.NotFound:
                return None
            except errors.RateLimited as error:
                if error.retry_after > MAX_IN_ACTIVITY_WAIT.total_seconds():
                    raise temporal_error(error) from error
                pacer.refused(error.retry_after)
            except errors.BridgeError as error:
                raise temporal_error(error) from error

    async def _add(self, request: RepairInput, value: str, pacer: _Pacer) -> str:
        scratch = request.scratch
        found = await self._entry(scratch.participant, value, pacer)
        if found is None:
            return "vanished"  # removed from DICT since the file was made
        entry = found.entry
        if (entry.participant, entry.key_type) != (scratch.participant, scratch.key_type) or cid_of(entry) != value:
            # DICT's answer does not hash to the CID asked for: never store what cannot be verified.
            raise ApplicationError(
                f"DICT's entry for CID {value} does not match it (pair or CID differs)",
                type=DICT_INCONSISTENT,
                non_retryable=True,
            )
        pair = scratch.pair
        kid = self.store.key_id(entry.key_type, entry.key)
        state = await self.store.key_state(pair, kid)
        if state.endswith("|" + value):
            return "repaired"  # done by an earlier attempt of this batch
        notification = entry_added(request.reconciliation_id, entry, value, datetime.now(UTC))
        status = await self.store.repair(
            pair, kid, state, value, entry_id=str(entry.id), outbox=scratch.outbox, notification=notification.to_json()
        )
        return "repaired" if status is RepairStatus.REPAIRED else "skipped"

    async def _remove(self, request: RepairInput, value: str) -> str:
        scratch = request.scratch
        pair = scratch.pair
        holder = await self.store.holder_of_cid(pair, value)
        if holder is None:
            return "vanished"  # an event (or an earlier attempt) already took it out of the set
        state = await self.store.key_state(pair, holder.key_id)
        notification = entry_removed(
            request.reconciliation_id, scratch.participant, scratch.key_type, value, holder.entry_id, datetime.now(UTC)
        )
        status = await self.store.repair(
            pair, holder.key_id, state, None, outbox=scratch.outbox, notification=notification.to_json()
        )
        return "repaired" if status is RepairStatus.REPAIRED else "skipped"
