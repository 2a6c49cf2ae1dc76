"""Hostile messages for the entry topics: what a broken or malicious producer could put there.

Each one says what must become of it: `dead_letter` (the starter dead-letters it with a reason, acks it,
and goes on) or `no_effect` (a valid event the versioned apply must leave without effect: it changes
nothing an independent computation of the published history would not already hold).
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Literal

from cidsync.events import EntryEvent, EventType
from cidsync.producer import build_event

Fate = Literal["dead_letter", "no_effect"]
FOUR_MB = 4 * 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    label: str
    payload: bytes
    fate: Fate
    partition_key: str | None = None
    properties: dict[str, str] = field(default_factory=dict)


def _mutated(event: EntryEvent, **changes: object) -> bytes:
    raw = json.loads(event.to_json())
    for path, value in changes.items():
        target = raw
        *parents, last = path.split("__")
        for name in parents:
            target = target[name]
        target[last] = value
    return json.dumps(raw).encode()


def hostile_messages(events: list[EntryEvent], rng: random.Random) -> list[Hostile]:
    """Built from the valid history, so each differs from a valid event in one way only. `events` must
    hold an entry with more than one event (for the backwards sequence)."""
    sample = rng.choice(events)
    by_entry: dict[uuid.UUID, list[EntryEvent]] = {}
    for event in events:
        by_entry.setdefault(event.entry.id, []).append(event)
    changed = next(history for history in by_entry.values() if len(history) > 1)
    first, last = changed[0], changed[-1]
    # Its first change again, as a new event with a sequence below the entry's last one: stale wherever
    # it lands, whatever order the real events arrive in.
    stale = last.sequence - 1 if first.sequence < last.sequence - 1 else first.sequence
    backwards = build_event(first.event_type, first.entry, "chaos", deletion_type=first.deletion_type, sequence=stale)
    duplicate = rng.choice(events)
    return [
        Hostile("invalid JSON", b'{"schema": "cidsync.entry-event/v1", "event_id": ', "dead_letter"),
        Hostile("invalid UTF-8", b'{"schema": "cidsync.entry-event/v1", "user_id": "\xff\xfe\xfd"}', "dead_letter"),
        Hostile("empty payload", b"", "dead_letter"),
        Hostile("a JSON array", b"[1, 2, 3]", "dead_letter"),
        Hostile("4 MB of garbage", bytes(rng.getrandbits(8) for _ in range(1024)) * (FOUR_MB // 1024), "dead_letter"),
        Hostile("sequence as a string", _mutated(sample, sequence=str(sample.sequence)), "dead_letter"),
        Hostile("participant as a number", _mutated(sample, entry__participant=12345678), "dead_letter"),
        Hostile("oversize key", _mutated(sample, entry__key="a" * 100_000), "dead_letter"),
        Hostile("oversize participant", _mutated(sample, entry__participant="1" * 100_000), "dead_letter"),
        Hostile("unknown event type", _mutated(sample, event_type="entry.claimed"), "dead_letter"),
        Hostile("a later major version (v2)", _mutated(sample, schema="cidsync.entry-event/v2"), "dead_letter"),
        Hostile("an unknown field under v1 (a typo there)", _mutated(sample, surprise="yes"), "dead_letter"),
        Hostile(
            "injection-looking key",
            _mutated(sample, entry__key="'; DROP TABLE entries; --{{7*7}}${jndi:x}"),
            "dead_letter",
        ),
        Hostile("injection-looking participant", _mutated(sample, entry__participant="1' OR '1'='1"), "dead_letter"),
        # Valid events that must change nothing: the same change again under other words, or a stale one.
        Hostile("sequence going backwards", backwards.to_json().encode(), "no_effect"),
        Hostile("a lying partition key", last.to_json().encode(), "no_effect", partition_key=str(uuid.uuid4())),
        Hostile(
            "lying properties",
            duplicate.to_json().encode(),
            "no_effect",
            properties={"event_type": EventType.DELETED.value, "entry_id": str(uuid.uuid4())},
        ),
        Hostile(
            "4 MB valid event (a repeat, its user id 4 MB)", _mutated(duplicate, user_id="x" * FOUR_MB), "no_effect"
        ),
        Hostile(
            "a repeat as a later minor (v1.1, with fields this release does not read)",
            _mutated(duplicate, schema="cidsync.entry-event/v1.1", origin="core-2", entry__verified_at="2026-12-01"),
            "no_effect",
        ),
        Hostile(
            "injection-looking user id (a repeat)",
            _mutated(duplicate, user_id="<script>alert(1)</script>'; DROP TABLE x; --"),
            "no_effect",
        ),
    ]
