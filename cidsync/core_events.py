"""What cidsync tells core banking on `core-events` (docs/design.md §1 "Local means our store plus a notification
to core banking"; §3): the entries reconciliation changed, and how each reconciliation ended.

Every event carries a deterministic `event_id` (a UUIDv5 of what it reports), so a notification published
twice after a crash or retry is recognisably the same one and core can drop the duplicate. A removal is
keyed by the entry id (when the store knew it), like the entry events core publishes, so it stays in order
with them; an addition by its CID (DICT does not know core's entry id: core finds its record by the key);
the others by key type.

Personal data: an addition carries the entry as DICT holds it (no entry id), because core must be able to
recreate or find its record from it; a removal carries only the entry's identity (entry id, CID), never the key.

Version 2 of the schema (`cidsync.core-event/v2`): an addition's `entry` has no `id` and its `entry_id` is
null (version 1 carried an id DICT could not give). The outbox is read by its routing fields only, so what
a version-1 worker left in it is still sent, as it was written.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cidsync.entry import DictEntry, KeyType

SCHEMA = "cidsync.core-event/v2"
_NAMESPACE = uuid.UUID("2b3f8c1e-4d7a-5e60-9b1c-7a0d4c2e9f11")


class CoreEventType(StrEnum):
    ENTRY_ADDED = "entry.reconciliation.added"  # DICT holds it and we did not: the full entry
    ENTRY_REMOVED = "entry.reconciliation.removed"  # we held it and DICT does not: the entry's identity
    RECONCILIATION_COMPLETED = "cid.reconciliation.completed"
    APPROVAL_NEEDED = "cid.reconciliation.approval_needed"
    VERIFICATION_STALE = "cid.verification.stale"


class Outcome(StrEnum):
    OK = "OK"  # DICT agreed, with nothing to repair (at once, or after a file that held no divergence)
    REPAIRED = "REPAIRED"  # DICT agreed after a repair
    NEEDS_ATTENTION = "NEEDS_ATTENTION"  # an operator rejected the repair, or never decided
    FAILED = "FAILED"  # still NOK after the allowed rounds, or DICT never produced a usable file


def event_id(*parts: str) -> uuid.UUID:
    """The same report always gets the same id (UUIDv5), so duplicates are recognisable."""
    return uuid.uuid5(_NAMESPACE, "|".join(parts))


class _CoreEvent(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    # pydantic reserves `schema`; the wire name stays "schema", as in the entry events.
    schema_: str = Field(SCHEMA, alias="schema")
    event_id: uuid.UUID
    occurred_at: datetime
    participant: str
    key_type: KeyType

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    @property
    def partition_key(self) -> str:
        return self.key_type.value


class EntryReconciled(_CoreEvent):
    event_type: Literal[CoreEventType.ENTRY_ADDED, CoreEventType.ENTRY_REMOVED]
    reconciliation_id: str
    cid: str
    entry_id: uuid.UUID | None  # removals: None only for a CID stored before entry ids were indexed; additions: None
    entry: DictEntry | None = None  # additions only

    @property
    def partition_key(self) -> str:
        return str(self.entry_id) if self.entry_id else self.cid


def entry_added(reconciliation_id: str, entry: DictEntry, cid: str, at: datetime) -> EntryReconciled:
    return EntryReconciled(
        event_id=event_id(reconciliation_id, CoreEventType.ENTRY_ADDED, cid),
        event_type=CoreEventType.ENTRY_ADDED,
        occurred_at=at,
        participant=entry.participant,
        key_type=entry.key_type,
        reconciliation_id=reconciliation_id,
        cid=cid,
        entry_id=None,
        entry=entry,
    )


def entry_removed(
    reconciliation_id: str, participant: str, key_type: KeyType, cid: str, entry_id: str, at: datetime
) -> EntryReconciled:
    return EntryReconciled(
        event_id=event_id(reconciliation_id, CoreEventType.ENTRY_REMOVED, cid),
        event_type=CoreEventType.ENTRY_REMOVED,
        occurred_at=at,
        participant=participant,
        key_type=key_type,
        reconciliation_id=reconciliation_id,
        cid=cid,
        entry_id=uuid.UUID(entry_id) if entry_id else None,
    )


class OutboxRouting(BaseModel):
    """What sending an outbox item needs, read from a notification written by this version or an earlier
    one (the rest is ignored: the item is sent as it was written)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    schema_: str = Field(alias="schema")
    event_id: uuid.UUID
    event_type: CoreEventType
    cid: str
    entry_id: uuid.UUID | None = None

    @property
    def partition_key(self) -> str:
        return str(self.entry_id) if self.entry_id else self.cid


class ReconciliationCompleted(_CoreEvent):
    event_type: Literal[CoreEventType.RECONCILIATION_COMPLETED] = CoreEventType.RECONCILIATION_COMPLETED
    reconciliation_id: str
    trigger: str
    outcome: Outcome
    added: int
    removed: int
    skipped: int  # changed by an event during the run, or gone from DICT: left to the next verification
    verifications: int
    files: int
    started_at: datetime
    duration_seconds: float
    reason: str = ""
    # When a repair above the threshold needed an operator: approved, rejected or timed out, by whom, why.
    decision: str = ""
    operator: str = ""
    decision_reason: str = ""


class ApprovalNeeded(_CoreEvent):
    event_type: Literal[CoreEventType.APPROVAL_NEEDED] = CoreEventType.APPROVAL_NEEDED
    reconciliation_id: str
    dict_only: int
    local_only: int
    threshold: int
    waiting_since: datetime


class VerificationStale(_CoreEvent):
    event_type: Literal[CoreEventType.VERIFICATION_STALE] = CoreEventType.VERIFICATION_STALE
    last_ok_at: datetime | None
    max_age_hours: float


CoreEvent = EntryReconciled | ReconciliationCompleted | ApprovalNeeded | VerificationStale
