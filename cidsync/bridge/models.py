"""What the Bridge returns, as domain types: small, typed, and safe to pass to and from activities."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from cidsync.entry import DictEntry, KeyType


class FileStatus(StrEnum):
    REQUESTED = "REQUESTED"
    PROCESSING = "PROCESSING"
    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"
    ERROR = "ERROR"

    @property
    def final(self) -> bool:
        return self in (FileStatus.AVAILABLE, FileStatus.UNAVAILABLE, FileStatus.ERROR)


class CIDEventType(StrEnum):
    ADDED = "ADDED"
    REMOVED = "REMOVED"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Verification(_Model):
    verification_id: str
    ok: bool
    verified_at: datetime


class CIDSetFile(_Model):
    file_id: str
    participant: str
    key_type: KeyType
    status: FileStatus
    requested_at: datetime
    cid_count: int = 0
    byte_size: int = 0
    sha256: str = ""
    available_at: datetime | None = None
    # The instant whose set the file holds (DICT's CreationTime); None until DICT has taken it.
    created_at: datetime | None = None


class CIDPage(_Model):
    cids: list[str]
    next_page_token: str
    offset: int


class EntryByCID(_Model):
    entry: DictEntry  # as DICT holds it: no entry id
    request_id: UUID
    cid: str


class CIDSetEvent(_Model):
    type: CIDEventType
    cid: str
    timestamp: datetime


class RateLimitBucket(_Model):
    """A DICT rate-limit bucket's state for a participant, as DICT last reported it."""

    policy: str
    available_tokens: int
    capacity: int
    refill_tokens: int
    refill_period_seconds: int
    observed_at: datetime


class CIDSetEvents(_Model):
    """One page of DICT's CID event log, oldest first, with DICT's VSync after its first and its last event."""

    events: list[CIDSetEvent]
    has_more: bool
    verifier_start: str
    verifier_end: str
