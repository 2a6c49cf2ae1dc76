"""The entry-event contract with core banking, schema v1 (docs/design.md §2).

`sequence` is core's commit order for the key and is what orders events; arrival order never does.
A message that does not parse here can never succeed: the starter dead-letters it with
`InvalidInput.summary()` as the reason. Any JSON payload is UTF-8 (RFC 8259), so that is all we accept.

How the contract evolves (`schema`: `cidsync.entry-event/v<major>[.<minor>]`):

- **A minor version adds fields, and only adds.** An event of a minor version newer than this code knows
  (`v1.3` when it knows `v1`) is read as the version it knows: the fields it does not know are ignored
  until a release reads them. Under a version it knows, an unknown field stays an error: a misspelt
  optional field (`owner_trade_nmae`) would otherwise vanish and leave a wrong CID.
- **A major version may change anything.** An event of a major version this code does not read is
  dead-lettered whole, with a reason that says so; never half-applied. Core moves to a new major only after
  every starter reads it (the dead-letter topic keeps what came too early, for a replay).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cidsync.entry import Entry
from cidsync.errors import validated, validated_json

SCHEMA_V1 = "cidsync.entry-event/v1"
# The newest minor of major 1 this code reads: fields of later minors are ignored, of this one required.
KNOWN_MINOR = 0
# The versions a producer of this release can be told to write (`ProducerConfig.schema`).
WRITABLE_SCHEMAS = (SCHEMA_V1,)
_SCHEMA = re.compile(r"cidsync\.entry-event/v(\d+)(?:\.(\d+))?")

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

    schema_: str = Field(alias="schema")
    event_id: UUID
    event_type: EventType
    occurred_at: AwareDatetime
    sequence: int = Field(ge=1, le=MAX_SEQUENCE, strict=True)
    # validate_default: the rule below must also run when the field is left out.
    deletion_type: DeletionType | None = Field(default=None, validate_default=True)
    user_id: str = Field(min_length=1)
    entry: Entry

    @model_validator(mode="before")
    @classmethod
    def _read_as_a_known_version(cls, data: Any) -> Any:
        """A later minor's fields dropped before validation; any other major refused, whole."""
        if not isinstance(data, dict):
            return data
        newer_minor = _newer_minor(data.get("schema", data.get("schema_")))
        if not newer_minor:
            return data
        known = {name for name, f in cls.model_fields.items()} | {f.alias for f in cls.model_fields.values() if f.alias}
        kept = {key: value for key, value in data.items() if key in known}
        if isinstance(entry := kept.get("entry"), dict):
            kept["entry"] = {key: value for key, value in entry.items() if key in Entry.model_fields}
        return kept

    @field_validator("schema_")
    @classmethod
    def _a_version_this_code_reads(cls, schema: str) -> str:
        found = _SCHEMA.fullmatch(schema)
        if found is None:
            raise ValueError(f"must be {SCHEMA_V1} (or a later minor, e.g. {SCHEMA_V1}.1)")
        if int(found[1]) != 1:
            raise ValueError(
                f"{schema} is a major version this release does not read (it reads v1 and its minors); "
                "upgrade cidsync, then replay the dead-letter topic"
            )
        return schema

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


def _newer_minor(schema: object) -> bool:
    """Whether `schema` is a minor of major 1 later than the one this code knows."""
    found = _SCHEMA.fullmatch(schema) if isinstance(schema, str) else None
    return found is not None and found[1] == "1" and int(found[2] or 0) > KNOWN_MINOR


def parse_event(data: object) -> EntryEvent:
    """Validate a decoded JSON object as a v1 entry event; raises `InvalidInput`."""
    return validated(EntryEvent, data, where="event")


def parse_event_json(raw: str | bytes) -> EntryEvent:
    """Validate a message payload (UTF-8 JSON) as a v1 entry event; raises `InvalidInput`."""
    return validated_json(EntryEvent, raw, where="event")
