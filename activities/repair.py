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
an entry (docs/design.md §5).
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
from cidsync.bridge.models import EntryByCID
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
    entries_per_minute: int = 1_200  # DICT's refill rate for GetEntryByCid (docs/design.md §1)


class RepairResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    repaired: int  # the store now holds DICT's answer for these CIDs (a notification is in the outbox)
    skipped: int  # the key changed locally since the reconciliation began: left for the next verification
    vanished: int  # DICT no longer has the entry, or the CID already left the local set
    remaining: int  # CIDs of this side still to handle


class SuspectRepair(BaseModel):
    model_config = ConfigDict(frozen=True)

    cid: str
    in_dict: bool  # DICT holds it (add it locally) or not (remove it locally)
    repair_id: str  # names the repair in core's notification (its event id derives from it)


class SuspectRepairInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    scratch: Scratch  # the follower's outbox lives here
    suspects: list[SuspectRepair]
    concurrency: int = 8
    entries_per_minute: int = 1_200


SUSPECT_OUTCOMES = ("repaired", "skipped", "vanished", "inconsistent")


class SuspectRepairResult(BaseModel):
    """The suspects' CIDs by outcome: repaired (the local set now holds DICT's state), skipped (an event
    changed the key meanwhile), vanished (DICT and the local set agree after all) and inconsistent (DICT
    answered an entry that does not hash to the CID: nothing stored)."""

    model_config = ConfigDict(frozen=True)

    repaired: list[str]
    skipped: list[str]
    vanished: list[str]
    inconsistent: list[str]


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
        batch = await self.store.reconciliation.to_repair(scratch, side, request.batch_size)
        pacer = _Pacer(request.entries_per_minute)
        limit = asyncio.Semaphore(request.concurrency)
        counts = {status: 0 for status in ("repaired", "skipped", "vanished")}

        async def handle(value: str) -> None:
            async with limit:
                if request.side is RepairSide.DICT_ONLY:
                    status = await self._add(scratch, request.reconciliation_id, value, pacer)
                else:
                    status = await self._remove(scratch, request.reconciliation_id, value)
                if status == "inconsistent":
                    raise _inconsistent(value)
                counts[status] += 1
                await self.store.reconciliation.repaired(scratch, side, value)
                activity.heartbeat(counts)

        await asyncio.gather(*(handle(value) for value in batch))
        return RepairResult(**counts, remaining=await self.store.reconciliation.left_to_repair(scratch, side))

    @activity.defn(name="repair_suspects")
    async def repair_suspects(self, request: SuspectRepairInput) -> SuspectRepairResult:
        """The follower's repair: CIDs whose DICT state the event log showed and the local set still
        contradicts after the grace period. Each is checked against DICT itself first (`GetEntryByCid`):
        the log may be behind DICT, and nothing is removed locally that DICT still holds."""
        pacer = _Pacer(request.entries_per_minute)
        limit = asyncio.Semaphore(request.concurrency)
        outcomes: dict[str, list[str]] = {status: [] for status in SUSPECT_OUTCOMES}

        async def handle(suspect: SuspectRepair) -> None:
            async with limit:
                if suspect.in_dict:
                    status = await self._add(request.scratch, suspect.repair_id, suspect.cid, pacer)
                else:
                    status = await self._remove(request.scratch, suspect.repair_id, suspect.cid, confirm=pacer)
                outcomes[status].append(suspect.cid)
                activity.heartbeat(len(outcomes["repaired"]))

        # Additions first: an entry DICT altered shows as its new CID added and its old one removed, and
        # adding the new CID moves the key off the old one, so the removal then finds nothing to do. Run
        # together, the two would race on the key and one be refused until the next look.
        await asyncio.gather(*(handle(suspect) for suspect in request.suspects if suspect.in_dict))
        await asyncio.gather(*(handle(suspect) for suspect in request.suspects if not suspect.in_dict))
        return SuspectRepairResult(**outcomes)

    async def _entry(self, participant: str, value: str, pacer: _Pacer) -> EntryByCID | None:
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

    async def _add(self, scratch: Scratch, repair_id: str, value: str, pacer: _Pacer) -> str:
        """Add DICT's CID `value` locally: repaired, skipped (an event changed the key), vanished (DICT
        no longer has it) or inconsistent (DICT's entry does not hash to it: never stored)."""
        found = await self._entry(scratch.participant, value, pacer)
        if found is None:
            return "vanished"  # removed from DICT since the file was made (or the log was read)
        entry = found.entry
        if (entry.participant, entry.key_type) != (scratch.participant, scratch.key_type) or cid_of(entry) != value:
            return "inconsistent"
        pair = scratch.pair
        kid = self.store.key_id(entry.key_type, entry.key)
        state = await self.store.ingestion.key_state(pair, kid)
        if state.endswith("|" + value):
            return "repaired"  # done by an earlier attempt (or the event arrived meanwhile)
        notification = entry_added(repair_id, entry, value, datetime.now(UTC))
        status = await self.store.reconciliation.repair(
            pair, kid, state, value, outbox=scratch.outbox, notification=notification.to_json()
        )
        return "repaired" if status is RepairStatus.REPAIRED else "skipped"

    async def _remove(self, scratch: Scratch, repair_id: str, value: str, confirm: _Pacer | None = None) -> str:
        """Remove the CID `value` from the local set: repaired, skipped or vanished (already gone). With
        `confirm`, DICT is asked first, and a CID it holds after all is left alone (vanished)."""
        pair = scratch.pair
        holder = await self.store.reconciliation.holder_of_cid(pair, value)
        if holder is None:
            return "vanished"  # an event (or an earlier attempt) already took it out of the set
        if confirm is not None and await self._entry(scratch.participant, value, confirm) is not None:
            return "vanished"  # DICT holds it again: nothing to remove
        state = await self.store.ingestion.key_state(pair, holder.key_id)
        notification = entry_removed(
            repair_id, scratch.participant, scratch.key_type, value, holder.entry_id, datetime.now(UTC)
        )
        status = await self.store.reconciliation.repair(
            pair, holder.key_id, state, None, outbox=scratch.outbox, notification=notification.to_json()
        )
        return "repaired" if status is RepairStatus.REPAIRED else "skipped"


def _inconsistent(value: str) -> ApplicationError:
    # DICT's answer does not hash to the CID asked for: never store what cannot be verified.
    return ApplicationError(
        f"DICT's entry for CID {value} does not match it (pair or CID differs)",
        type=DICT_INCONSISTENT,
        non_retryable=True,
    )
