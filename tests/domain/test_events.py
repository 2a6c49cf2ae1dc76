"""The entry-event schema v1 (docs/design.md §2): round trips and consistency rules."""

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cidsync.cid import cid
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput
from cidsync.events import MAX_SEQUENCE, DeletionType, EntryEvent, EventType, parse_event, parse_event_json
from cidsync_tooling.synthetic import synthetic_entry

CONTRACT_EXAMPLE = """
{"schema": "cidsync.entry-event/v1", "event_id": "9b2d3c4e-5f60-4718-8a9b-0c1d2e3f4a5b",
 "event_type": "entry.created",
 "occurred_at": "2026-11-23T10:00:00.123456Z", "sequence": 1795428000123456789,
 "deletion_type": null, "user_id": "user-123",
 "entry": {"id": "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d", "request_id": "7d6c5b4a-3f2e-4d1c-8b0a-6f5e4d3c2b1a",
   "key_type": "CPF", "key": "12345678901",
   "participant": "12345678", "branch": "0001", "account_number": "123456", "account_type": "CACC",
   "account_opened_at": "2020-01-01T00:00:00Z", "owner_type": "NATURAL_PERSON", "owner_name": "João Silva",
   "owner_trade_name": null, "owner_tax_id": "12345678901"}}
"""


def test_the_contract_example_parses() -> None:
    event = parse_event_json(CONTRACT_EXAMPLE)
    assert event.event_type is EventType.CREATED
    assert event.sequence == 1795428000123456789
    assert event.entry.owner_name == "João Silva"


def test_serialises_with_the_contract_field_names() -> None:
    event = parse_event_json(CONTRACT_EXAMPLE)
    data = json.loads(event.to_json())
    assert data["schema"] == "cidsync.entry-event/v1"
    assert data["occurred_at"] == "2026-11-23T10:00:00.123456Z"
    assert set(data) == set(json.loads(CONTRACT_EXAMPLE))


@st.composite
def events(draw: st.DrawFn) -> EntryEvent:
    rng = random.Random(draw(st.integers(0, 2**32)))
    event_type = draw(st.sampled_from(list(EventType)))
    deletion = draw(st.sampled_from(list(DeletionType))) if event_type is EventType.DELETED else None
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=draw(st.integers(0, 10**14)))
    return EntryEvent(
        schema_="cidsync.entry-event/v1",
        event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
        event_type=event_type,
        occurred_at=moment,
        sequence=draw(st.integers(1, MAX_SEQUENCE)),
        deletion_type=deletion,
        user_id=draw(st.text(min_size=1, max_size=20)),
        entry=synthetic_entry(rng, "12345678", draw(st.sampled_from(list(KeyType)))),
    )


@given(events())
def test_json_round_trip(event: EntryEvent) -> None:
    assert parse_event_json(event.to_json()) == event
    assert parse_event_json(event.to_json().encode("utf-8")) == event


@given(events())
def test_dict_round_trip(event: EntryEvent) -> None:
    assert parse_event(json.loads(event.to_json())) == event


def _example(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CONTRACT_EXAMPLE)
    return data | changes


def _problems(data: object) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        parse_event(data)
    return {p.field: p.reason for p in caught.value.problems}


def test_delete_needs_a_deletion_type() -> None:
    assert _problems(_example(event_type="entry.deleted")) == {
        "event.deletion_type": "an entry.deleted event needs IMMEDIATE or WAITING_PERIOD"
    }
    data = _example(event_type="entry.deleted")
    del data["deletion_type"]
    assert "event.deletion_type" in _problems(data)


def test_deletion_type_only_on_deletes() -> None:
    assert _problems(_example(deletion_type="IMMEDIATE")) == {"event.deletion_type": "must be null for entry.created"}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"schema": "cidsync.entry-event/v2"}, "schema", "a major version this release does not read"),
        ({"schema": "cidsync.entry-event/v2.1"}, "schema", "upgrade cidsync, then replay the dead-letter topic"),
        ({"schema": "cidsync.entry-event"}, "schema", "must be cidsync.entry-event/v1"),
        ({"schema": "cidsync.entry-event/v1.x"}, "schema", "must be cidsync.entry-event/v1"),
        ({"event_type": "entry.moved"}, "event_type", "Input should be"),
        ({"sequence": 0}, "sequence", "greater than or equal to 1"),
        ({"sequence": 2**63}, "sequence", "less than or equal to"),
        ({"sequence": "5"}, "sequence", "valid integer"),
        ({"sequence": 5.0}, "sequence", "valid integer"),
        ({"occurred_at": "2026-11-23T10:00:00"}, "occurred_at", "timezone"),
        ({"user_id": ""}, "user_id", "at least 1 character"),
        ({"event_id": "x"}, "event_id", "UUID"),
    ],
)
def test_envelope_rules(changes: dict[str, Any], field: str, message: str) -> None:
    assert message in _problems(_example(**changes))[f"event.{field}"]


def test_entry_problems_are_nested_under_the_event() -> None:
    data = _example()
    data["entry"] = data["entry"] | {"participant": "1"}
    assert _problems(data) == {"event.entry.participant": "a participant (ISPB) must be exactly 8 digits"}


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe{}", b"[]", b"null"])
def test_unparseable_payloads_raise_invalid_input(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_event_json(raw)
    assert caught.value.summary().startswith("invalid event: ")


def _contract(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CONTRACT_EXAMPLE)
    return data | changes


def test_a_later_minor_version_is_read_and_its_new_fields_ignored() -> None:
    """Core adds fields under v1.1 before cidsync reads them: the event is applied as v1 would be."""
    data = _contract(schema="cidsync.entry-event/v1.1", correlation_id="c-1")
    data["entry"] = data["entry"] | {"key_ownership_date": "2026-01-01T00:00:00Z"}
    later = parse_event_json(json.dumps(data))
    known = parse_event_json(CONTRACT_EXAMPLE)
    assert later.schema_ == "cidsync.entry-event/v1.1"
    assert later.model_dump(exclude={"schema_"}) == known.model_dump(exclude={"schema_"})
    assert cid(later.entry) == cid(known.entry)  # the CID is v1's: the new field is not read


def test_under_the_version_it_knows_an_unknown_field_is_still_refused() -> None:
    """A misspelt optional field under v1 is an error, not a silently wrong CID."""
    data = _contract()
    data["entry"] = data["entry"] | {"owner_trade_nmae": "Loja"}
    assert "event.entry.owner_trade_nmae" in _problems(data)
    assert "event.correlation_id" in _problems(_contract(schema="cidsync.entry-event/v1.0", correlation_id="c"))


def test_a_later_major_version_is_refused_whole_with_a_reason_that_says_what_to_do() -> None:
    data = _contract(schema="cidsync.entry-event/v2", entry={"anything": "else"})
    with pytest.raises(InvalidInput) as caught:
        parse_event_json(json.dumps(data))
    assert "cidsync.entry-event/v2 is a major version this release does not read" in caught.value.summary()
