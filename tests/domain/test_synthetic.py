"""Synthetic histories are valid: every entry is created first and nothing follows its delete."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cidsync.events import EventType
from cidsync.synthetic import synthetic_history


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
