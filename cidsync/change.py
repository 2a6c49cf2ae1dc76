"""The minimal change an entry event makes: what Temporal sees of it (docs/design.md §3, §5).

`CIDChange` holds ids, the key id (a keyed hash, see `cidsync.key_id`), the CID and the sequence. The
starter makes it from the validated event (`CIDChange.of_event`); the PIX key, the owner's name and tax id
and the account never leave the starter. It validates what it carries, so a change that could only have
come from a bug (a delete with a CID, a key id that is not a hash) fails where it is made, not in Redis.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cidsync.cid import cid, is_cid
from cidsync.entry import Entry, KeyType, Participant
from cidsync.events import MAX_SEQUENCE, DeletionType, EntryEvent, EventType
from cidsync.key_id import KeyId, key_id


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


class CIDBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    changes: list[CIDChange]
