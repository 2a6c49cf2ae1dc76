"""The notifications to core: what version 2 of the schema carries, and the outbox read across versions."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from cidsync.cid import cid
from cidsync.core_events import SCHEMA, CoreEventType, OutboxRouting, entry_added, entry_removed
from cidsync.entry import KeyType
from cidsync_tooling.synthetic import synthetic_entry

AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_an_addition_carries_dicts_entry_without_an_entry_id_and_is_keyed_by_its_cid() -> None:
    entry = synthetic_entry(random.Random(1), "12345678", KeyType.EMAIL).in_dict()
    value = cid(entry, entry.request_id)
    added = entry_added("rec-1", entry, value, AT)
    raw = json.loads(added.to_json())
    assert raw["schema"] == SCHEMA == "cidsync.core-event/v2"
    assert raw["entry_id"] is None
    assert "id" not in raw["entry"]
    assert raw["entry"]["key"] == entry.key  # core finds its record by the key
    assert added.partition_key == value


def test_a_removal_is_keyed_by_the_entry_id_the_store_knew() -> None:
    removed = entry_removed("rec-1", "12345678", KeyType.EVP, "a" * 64, "0b0e5a3e-9c1d-4a55-8f7e-1d2c3b4a5f60", AT)
    assert removed.partition_key == "0b0e5a3e-9c1d-4a55-8f7e-1d2c3b4a5f60"
    assert json.loads(removed.to_json()).get("entry") is None  # a removal never carries the key


def test_an_outbox_item_a_version_1_worker_wrote_is_still_routed_as_written() -> None:
    """An upgrade finds repairs of the previous version in the outbox: the entry with core's id, schema v1."""
    entry = synthetic_entry(random.Random(2), "12345678", KeyType.CPF)
    written_by_v1 = json.dumps(
        {
            "schema": "cidsync.core-event/v1",
            "event_id": "6f1c2a9e-3b4d-5e6f-8a9b-0c1d2e3f4a5b",
            "occurred_at": AT.isoformat(),
            "participant": "12345678",
            "key_type": "CPF",
            "event_type": CoreEventType.ENTRY_ADDED.value,
            "reconciliation_id": "rec-0",
            "cid": "b" * 64,
            "entry_id": str(entry.id),
            "entry": json.loads(entry.model_dump_json()),
        }
    )
    routing = OutboxRouting.model_validate_json(written_by_v1)
    assert (routing.schema_, routing.event_type, routing.partition_key) == (
        "cidsync.core-event/v1",
        CoreEventType.ENTRY_ADDED,
        str(entry.id),
    )
