"""Synthetic histories are valid: every entry is created first and nothing follows its delete."""

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from cidsync.entry import KeyType
from cidsync.events import EventType
from cidsync_tooling.synthetic import synthetic_history


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 400), st.integers(0, 2**32))
def test_each_entry_history_is_a_valid_lifecycle(count: int, seed: int) -> None:
    changes = list(synthetic_history(count, ["12345678", "87654321"], seed=seed))
    assert len(changes) == count
    state: dict[object, str] = {}
    for change in changes:
        previous = state.get(change.entry.id)
        if change.event_type is EventType.CREATED:
            assert previous is None
            state[change.entry.id] = "live"
        else:
            assert previous == "live", f"{change.event_type} of an entry that is {previous}"
            if change.event_type is EventType.DELETED:
                assert change.deletion_type is not None
                state[change.entry.id] = "deleted"


def test_a_long_history_has_every_kind_and_is_reproducible() -> None:
    first = list(synthetic_history(2_000, ["12345678"], seed=7))
    assert {c.event_type for c in first} == set(EventType)
    assert [c.entry for c in first] == [c.entry for c in synthetic_history(2_000, ["12345678"], seed=7)]


def test_no_key_is_used_by_two_entries_even_at_scale() -> None:
    # Seed 7 drew the same e-mail address twice within 60,000 changes before keys were kept unique.
    owners: dict[tuple[KeyType, str], set[uuid.UUID]] = {}
    for change in synthetic_history(60_000, ["50000001", "50000002"], seed=7):
        owners.setdefault((change.entry.key_type, change.entry.key), set()).add(change.entry.id)
    assert all(len(entries) == 1 for entries in owners.values())
