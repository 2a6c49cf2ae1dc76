"""The follower's rules (`cidsync.follow`) and the simulator's event log (`EventLog`) they read."""

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from cidsync.bridge.models import CIDEventType, CIDSetEvent, CIDSetEvents
from cidsync.cid import vsync
from cidsync.follow import (
    Cursor,
    LogError,
    Observation,
    Suspect,
    dict_states,
    due,
    merge,
    page_consistent,
    watch,
)
from cidsync_tooling.simulator.dict_state import EventLog

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ADDED, REMOVED = CIDEventType.ADDED, CIDEventType.REMOVED


def cid(n: int) -> str:
    return format(n, "064x")


def event(kind: CIDEventType, n: int, at: datetime) -> CIDSetEvent:
    return CIDSetEvent(type=kind, cid=cid(n), timestamp=at)


def page(events: list[CIDSetEvent], has_more: bool = False) -> CIDSetEvents:
    """As DICT answers a pair empty before the page: its VSync after the first event and after the last."""
    return CIDSetEvents(
        events=events,
        has_more=has_more,
        verifier_start=vsync(e.cid for e in events[:1]),
        verifier_end=vsync(e.cid for e in events),
    )


def read_all(pages: "Pager", cursor: Cursor, limit: int) -> list[CIDSetEvent]:
    taken: list[CIDSetEvent] = []
    for _ in range(10_000):
        answer = pages(cursor.start, limit)
        fresh, cursor = cursor.take(answer)
        taken += fresh
        if not answer.has_more:
            return taken
    raise AssertionError("never reached the end of the log")


class Pager:
    """DICT's paging over a list of events: start inclusive, the first `limit` from there."""

    def __init__(self, events: list[CIDSetEvent]) -> None:
        self.events = events

    def __call__(self, start: datetime, limit: int) -> CIDSetEvents:
        found = [e for e in self.events if e.timestamp >= start]
        return page(found[:limit], has_more=len(found) > limit)


def test_the_cursor_reads_each_event_once_whatever_the_page_size_and_shared_timestamps() -> None:
    rng = random.Random(7)
    for _ in range(200):
        events, at = [], T0
        for n in range(rng.randrange(0, 60)):
            at += timedelta(microseconds=rng.choice([0, 0, 1, 5]))  # often several events in one instant
            events.append(event(rng.choice([ADDED, REMOVED]), n, at))
        per_instant = max((sum(e.timestamp == x.timestamp for e in events) for x in events), default=0)
        limit = rng.randrange(per_instant + 1, per_instant + 10)  # a page always reaches past one instant
        assert read_all(Pager(events), Cursor(start=T0), limit) == events


def test_a_page_full_of_one_instant_cannot_be_left_and_says_so() -> None:
    events = [event(ADDED, n, T0) for n in range(3)]
    with pytest.raises(LogError, match="more than one page of DICT's log"):
        Cursor(start=T0).take(page(events[:2], has_more=True))


def test_a_log_that_goes_back_in_time_is_refused() -> None:
    cursor = Cursor(start=T0)
    with pytest.raises(LogError, match="before"):
        cursor.take(page([event(ADDED, 1, T0 - timedelta(seconds=1))]))
    with pytest.raises(LogError, match="out of time order"):
        cursor.take(page([event(ADDED, 1, T0 + timedelta(seconds=2)), event(ADDED, 2, T0 + timedelta(seconds=1))]))


def test_an_empty_page_leaves_the_cursor_where_it_was() -> None:
    cursor = Cursor(start=T0, seen=("ADDED:" + cid(1),))
    assert cursor.take(page([])) == ([], cursor)


def test_the_last_event_for_a_cid_is_dicts_state() -> None:
    states = dict_states(
        [
            event(ADDED, 1, T0),
            event(REMOVED, 1, T0 + timedelta(seconds=1)),  # an update and its revert
            event(REMOVED, 2, T0),
            event(ADDED, 2, T0 + timedelta(seconds=2)),
        ]
    )
    assert {value: (s.in_dict, s.changed_at) for value, s in states.items()} == {
        cid(1): (False, T0 + timedelta(seconds=1)),
        cid(2): (True, T0 + timedelta(seconds=2)),
    }


def test_page_consistency_is_the_xor_of_its_cids() -> None:
    good = page([event(ADDED, 3, T0), event(REMOVED, 5, T0)])
    assert page_consistent(good)
    assert not page_consistent(good.model_copy(update={"verifier_end": cid(4)}))
    # DICT's SyncVerifierStart is after the first event, not before it: a start verifier of the VSync
    # before the page (what the contract said until DICT's spec was read) does not lead to the end.
    assert not page_consistent(good.model_copy(update={"verifier_start": "0" * 64}))


def test_merge_starts_keeps_and_ends_suspects() -> None:
    grace = timedelta(minutes=2)

    def seen(n: int, in_dict: bool, local: bool, at: datetime = T0) -> Observation:
        return Observation(cid=cid(n), in_dict=in_dict, changed_at=at, local=local)

    first = merge({}, [seen(1, True, False), seen(2, False, True), seen(3, True, True)], grace)
    assert (set(first.suspects), first.new, first.resolved) == ({cid(1), cid(2)}, 2, 0)
    assert first.suspects[cid(1)].due == T0 + grace
    later = T0 + timedelta(minutes=1)
    # cid 1 is seen again unchanged (its clock keeps running); cid 2's event arrived; DICT changed cid 1
    # again only in the third look, which restarts its clock.
    second = merge(first.suspects, [seen(1, True, False), seen(2, False, False)], grace)
    assert (set(second.suspects), second.new, second.resolved) == ({cid(1)}, 0, 1)
    assert second.suspects[cid(1)].due == T0 + grace
    third = merge(second.suspects, [seen(1, False, True, at=later)], grace)
    assert third.suspects[cid(1)] == Suspect(cid=cid(1), in_dict=False, changed_at=later, due=later + grace)
    assert third.new == 0


def test_an_agreeing_removal_is_watched_and_a_late_creation_becomes_a_suspect_due_in_its_grace() -> None:
    """Seed 11 of the chaos run: DICT created a CID and removed it behind cidsync's back; the follower read
    both (net: absent) while the creation's event was held up, so the local set agreed. When the event
    lands, the CID is local again with no log event to explain it: the watch makes it a suspect, due when
    the removal's grace ends, so it is repaired without a CID file."""
    grace = timedelta(minutes=2)
    removed = Observation(cid=cid(7), in_dict=False, changed_at=T0, local=False)
    watches = watch({}, {}, [removed], grace, T0 + timedelta(seconds=1), most=10)
    assert watches == {cid(7): Suspect(cid=cid(7), in_dict=False, changed_at=T0, due=T0 + grace)}
    back = Observation(cid=cid(7), in_dict=False, changed_at=T0, local=True)  # the late event landed
    merged = merge({}, [back], grace)
    assert merged.suspects[cid(7)].due == T0 + grace  # due from DICT's removal, not from when it was seen
    assert watch(watches, merged.suspects, [back], grace, T0 + timedelta(seconds=30), most=10) == {}
    # Watches end with their grace, and the newest are kept past `most`.
    assert watch(watches, {}, [], grace, T0 + grace, most=10) == {}
    many = [
        Observation(cid=cid(n), in_dict=False, changed_at=T0 + timedelta(seconds=n), local=False) for n in range(20)
    ]
    kept = watch({}, {}, many, grace, T0 + timedelta(seconds=20), most=5)
    assert sorted(kept) == sorted(cid(n) for n in range(15, 20))


def test_due_lists_the_suspects_whose_grace_is_over_oldest_first() -> None:
    def suspect(n: int) -> Suspect:
        return Suspect(
            cid=cid(n), in_dict=True, changed_at=T0 + timedelta(seconds=n), due=T0 + timedelta(seconds=n + 120)
        )

    suspects = {cid(n): suspect(n) for n in (3, 1, 2)}
    assert [s.cid for s in due(suspects, T0 + timedelta(seconds=122))] == [cid(1), cid(2)]
    assert due(suspects, T0) == []


def test_the_simulators_log_has_millisecond_ties_and_verifiers_at_every_point() -> None:
    log = EventLog()
    rng = random.Random(3)
    present: set[str] = set()
    naive = [0]
    for _ in range(3000):  # across checkpoints (every 1,024 events)
        value = cid(rng.randrange(1, 400))
        kind = REMOVED if value in present else ADDED
        present.symmetric_difference_update({value})
        log.append(T0, kind, value)  # all in the same instant: DICT's ms has ties, EventLog.TIES at most
        naive.append(naive[-1] ^ int(value, 16))
    assert all(b - a in (0, 1) for a, b in zip(log.at_ms, log.at_ms[1:], strict=False))
    assert max(Counter(log.at_ms).values()) == EventLog.TIES
    for index in (0, 1, 1023, 1024, 1025, 2048, 2999, 3000):
        assert log.vsync_before(index) == naive[index]
    assert format(log.vsync_before(len(log)), "064x") == vsync(present)
    middle = T0 + timedelta(milliseconds=30)  # events 1500 to 1549 (50 a millisecond)
    answer = log.page(middle, T0 + timedelta(seconds=1), limit=200)
    assert answer.has_more
    assert len(answer.events) == 200
    assert answer.events[0][0] == middle
    assert int(answer.verifier_start, 16) == naive[1501]  # after the page's first event
    assert int(answer.verifier_end, 16) == naive[1700]  # after its last
    assert page_consistent(
        CIDSetEvents(
            events=[CIDSetEvent(type=k, cid=v, timestamp=a) for a, k, v in answer.events],
            has_more=True,
            verifier_start=answer.verifier_start,
            verifier_end=answer.verifier_end,
        )
    )
    tail = log.page(T0 + timedelta(milliseconds=59), T0 + timedelta(seconds=1), limit=200)
    assert not tail.has_more
    assert (len(tail.events), int(tail.verifier_end, 16)) == (50, naive[3000])
    inclusive = log.page(T0, T0 + timedelta(milliseconds=1), limit=200)  # EndTime is inclusive, as DICT's
    assert len(inclusive.events) == 100
