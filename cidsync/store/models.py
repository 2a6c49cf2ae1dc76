"""What goes into the store and what comes out: the minimal change of an event, and results as counts.

`CIDChange` is everything Temporal sees of an entry event (docs/design.md §3, §5): ids, the key id (a keyed
hash, see `key_id`), the CID and the sequence. The starter builds it from the validated event
(`CIDChange.of_event`); the PIX key, the owner's name and tax id and the account never leave the starter.
The models validate what they carry, so a change that could only have come from a bug (a delete with a
CID, a key id that is not a hash) fails where it is made, not inside Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cidsync.anchor import Verdict
from cidsync.cid import cid, is_cid
from cidsync.entry import Entry, KeyType, Participant
from cidsync.events import MAX_SEQUENCE, DeletionType, EntryEvent, EventType
from cidsync.store.key_id import KeyId, key_id
from cidsync.store.layout import RepairSide


def _check(valid: bool, message: str) -> None:
    if not valid:
        raise ValueError(message)


def _cid(value: str) -> str:
    _check(is_cid(value), "a CID must be 64 lowercase hexadecimal digits")
    return value


Cid = Annotated[str, AfterValidator(_cid)]


class CIDChange(BaseModel):
    """One versioned change of a key's CID: `cid` None deletes it (the store keeps a tombstone)."""

    model_config = ConfigDict(frozen=True)

    participant: Participant
    key_type: KeyType
    key_id: KeyId
    cid: Cid | None
    sequence: int = Field(ge=1, le=MAX_SEQUENCE)
    event_type: EventType
    deletion_type: DeletionType | None = None
    event_id: UUID
    entry_id: UUID  # kept in the reverse index, so a CID removed by reconciliation names its entry

    @model_validator(mode="after")
    def _consistent(self) -> CIDChange:
        deleted = self.event_type is EventType.DELETED
        _check(deleted == (self.cid is None), "a delete carries no CID, a creation or update carries one")
        _check(deleted == (self.deletion_type is not None), "a delete, and only a delete, has a deletion type")
        return self

    @classmethod
    def of_event(cls, event: EntryEvent, key_secret: bytes) -> CIDChange:
        """The change a validated event makes: its CID (pure domain code) and its key's id."""
        return cls._of(event.entry, event.event_type, event.sequence, key_secret, event.event_id, event.deletion_type)

    @classmethod
    def creation(cls, entry: Entry, *, sequence: int, key_secret: bytes, event_id: UUID | None = None) -> CIDChange:
        """The change that creates `entry`, outside any event: how a store is seeded from known entries."""
        return cls._of(entry, EventType.CREATED, sequence, key_secret, event_id or uuid4(), None)

    @classmethod
    def _of(
        cls,
        entry: Entry,
        event_type: EventType,
        sequence: int,
        key_secret: bytes,
        event_id: UUID,
        deletion_type: DeletionType | None,
    ) -> CIDChange:
        # Built unchecked: every value is a validated entry's or event's, or computed here (a 32-hex key id,
        # a 64-hex CID, a CID exactly when not deleted). Checking them again cost the starter ~15 us an
        # event, two thirds of making the change. A change from anywhere else (a workflow's input) is checked.
        return cls.model_construct(
            participant=entry.participant,
            key_type=entry.key_type,
            key_id=key_id(key_secret, entry.key_type, entry.key),
            cid=None if event_type is EventType.DELETED else cid(entry),
            sequence=sequence,
            event_type=event_type,
            deletion_type=deletion_type,
            event_id=event_id,
            entry_id=entry.id,
        )


class ApplyStatus(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # an equal or newer sequence was already applied for the key: nothing changed


class ApplyResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: ApplyStatus
    previous_sequence: int | None
    vsync: str


class CIDBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    changes: list[CIDChange]


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    applied: int
    stale: int


class RepairStatus(StrEnum):
    REPAIRED = "repaired"
    CHANGED = "changed"  # the key changed since the repair was decided: left as it is


class CidHolder(BaseModel):
    model_config = ConfigDict(frozen=True)

    key_id: str
    entry_id: str  # "" when the CID came from an event older than the reverse index's entry ids


class LocalVSync(BaseModel):
    model_config = ConfigDict(frozen=True)

    vsync: str
    count: int


class LocalView(BaseModel):
    """Which of some CIDs the local set holds, and its VSync, read at one instant."""

    model_config = ConfigDict(frozen=True)

    members: list[bool]
    vsync: str
    count: int
    changes: list[tuple[str, bool]] = []  # the set's journalled changes asked for: (CID, added), oldest first


class VerificationRecord(BaseModel):
    """A verification of a pair and how it was obtained: `formal` is DICT's `VerifySync` answer (what the
    36-hour rule counts); `log` is a log-anchored proof (DICT's verifier after a point of its log equal to
    the local VSync reconstructed at that point), recorded only when it holds."""

    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    ok: bool
    at: datetime
    verification_id: str
    kind: Literal["formal", "log"] = "formal"
    vsync: str = ""  # the VSync proved (the local one, or the one predicted from it and DICT's log)
    log_point: datetime | None = None  # where DICT's log was read up to, for a proof that used it


class PairVerification(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    last_result: str | None
    last_at: datetime | None
    last_ok_at: datetime | None
    last_proof_at: datetime | None = None  # the last proof of any kind (formal OK or log-anchored)
    last_proof_kind: str | None = None


class DiffResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    dict_only: int
    local_only: int


class JudgedDiff(BaseModel):
    """A diff's CIDs after a look at DICT's log and the local set now (`cidsync.anchor`), by side."""

    model_config = ConfigDict(frozen=True)

    dict_only: int  # confirmed: DICT has it, the local set lacks it, for longer than the grace
    local_only: int  # confirmed the other way
    in_flight: int  # agreed on by now: changes that were on their way (left the diff)
    recent: int  # DICT changed them within the grace, or they differed at one look only: judged again later

    @classmethod
    def of(cls, counts: Mapping[tuple[RepairSide, Verdict], int]) -> JudgedDiff:
        def total(verdict: Verdict, side: RepairSide | None = None) -> int:
            return sum(n for (s, v), n in counts.items() if v is verdict and side in (None, s))

        return cls(
            dict_only=total(Verdict.CONFIRMED, RepairSide.DICT_ONLY),
            local_only=total(Verdict.CONFIRMED, RepairSide.LOCAL_ONLY),
            in_flight=total(Verdict.IN_FLIGHT),
            recent=total(Verdict.RECENT) + total(Verdict.CONFIRMING),
        )
