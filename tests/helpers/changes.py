"""Minimal changes for tests that drive the store directly, as the starter would build them."""

from __future__ import annotations

import uuid

from cidsync.change import CIDChange
from cidsync.entry import KeyType
from cidsync.events import DeletionType, EventType
from cidsync.key_id import key_id

_ENTRIES = uuid.UUID("5f0c7f52-8c1b-4b7e-9c52-2d5a2e6f9a10")


def entry_id_of(key: str) -> uuid.UUID:
    """A stable entry id per key, so a test can tell which entry holds a CID."""
    return uuid.uuid5(_ENTRIES, key)


def change(
    participant: str,
    key_type: KeyType,
    key: str,
    sequence: int,
    cid: str | None,
    *,
    secret: bytes,
    event_id: uuid.UUID | str | None = None,
    entry_id: uuid.UUID | None = None,
    event_type: EventType | None = None,
) -> CIDChange:
    """A creation (or `event_type`) with a CID, an IMMEDIATE delete without one."""
    deleted = cid is None
    return CIDChange(
        participant=participant,
        key_type=key_type,
        key_id=key_id(secret, key_type, key),
        cid=cid,
        sequence=sequence,
        event_type=event_type or (EventType.DELETED if deleted else EventType.CREATED),
        deletion_type=DeletionType.IMMEDIATE if deleted else None,
        event_id=event_id or uuid.uuid4(),
        entry_id=entry_id or entry_id_of(key),
    )
