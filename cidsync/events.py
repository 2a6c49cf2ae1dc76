"""The entry-event contract with core banking, schema v1 (docs/design.md §2).

`sequence` is core's commit order for the key and is what orders events; arrival order never does.
A message that does not parse here can never succeed: the starter dead-letters it with
`InvalidInput.summary()` as the reason. Any JSON payload is UTF-8 (RFC 8259), so that is all we accept.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cidsync.entry import Entry
from cidsync.errors import validated, validated_json

SCHEMA_V1 = "cidsync.entry-event/v1"

# Core's sequence is a signed 64-bit number (a commit timestamp in ns in the contract's example);
# bounding it here keeps it exact in every consumer, JSON and Redis included.
MAX_SEQUENCE = 2**63 - 1


class EventType(StrEnum):
    CREATED = "entry.created"
    UPDATED = "entry.updated"
    DELETED = "entry.deleted"


class DeletionType(StrEnum):
    IMMEDIATE = "IMMEDIATE"
    WAITING_PERIOD = "WAITING_PERIOD"


class EntryEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    schema_: Literal["cidsync.entry-event/v1"] = Field(alias="schema")
    event_id: UUID
    event_type: EventType
    occurred_at: AwareDatetime
    sequence: int = Field(ge=1, le=MAX_SEQUENCE, strict=True)
    # validate_default: the rule below must also run when the field is left out.
    deletion_type: DeletionType | None = Field(default=None, validate_default=True)
    user_id: str = Field(min_length=1)
    entry: Entry

    @field_validator("deletion_type")
    @classmethod
    def _deletion_type_only_for_deletes(
        cls, deletion_type: DeletionType | None, info: ValidationInfo
    ) -> DeletionType | None:
        event_type = info.data.get("event_type")
        if event_type is EventType.DELETED and deletion_type is None:
            raise ValueError("an entry.deleted event needs IMMEDIATE or WAITING_PERIOD")
        if event_type in (EventType.CREATED, EventType.UPDATED) and deletion_type is not None:
            raise ValueError(f"must be null for {event_type.value}")
        return deletion_type

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def parse_event(data: object) -> EntryEvent:
    """Validate a decoded JSON object as a v1 entry event; raises `InvalidInput`."""
    return validated(EntryEvent, data, where="event")


def parse_event_json(raw: str | bytes) -> EntryEvent:
    """Validate a message payload (UTF-8 JSON) as a v1 entry event; raises `InvalidInput`."""
    return validated_json(EntryEvent, raw, where="event")
