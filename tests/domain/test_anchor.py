"""The time-anchored diff (`cidsync.anchor`), property-tested on a model of a busy pair.

A model of one pair over time: core keeps changing DICT (creations, immediate deletes, updates: each a CID
added and removed), each change shows in DICT's log after a visibility delay and reaches the local set
after a pipeline delay, both random and below the grace; and DICT is changed behind cidsync's back
(CIDs added and removed that no event will ever bring). A CID file is DICT's set at a random snapshot.
The reconciliation's procedure runs on it as ReconcileVSync runs it (roll the file forward with what the
log shows, diff, then looks a grace apart, each after reading the log again) while the changes go on.
Whatever the interleaving, the confirmed divergence is exactly what was injected.

The log-anchored proof (`as_of`) runs on the same model: DICT's log read up to a settle ago (every change
older is shown by then), the local set undone by its journal where the log does not show a change yet
equals DICT's set at the read's end at every read, and never while a divergence older than the window
remains.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cidsync.anchor import Verdict, as_of, judge, roll
from cidsync.bridge.models import CIDEventType, CIDSetEvent
from cidsync.cid import vsync
from cidsync.follow import dict_states

T = datetime(2026, 12, 4, 12, tzinfo=UTC)


def cid(n: int) -> str:
    """A CID as random as DICT's (VSyncs of different sets then differ: with small numbers XOR collides)."""
    return hashlib.sha256(n.to_bytes(8, "big")).hexdigest()


GRACE = 2_000  # ms
MAX_VISIBILITY = 700  # the log shows a change this late at most
MAX_PIPELINE = 1_200  # core's event reaches the local set this late at most (together: within the grace)


@dataclass(frozen=True)
class Change:
    at: int  # ms
    kind: CIDEventType
    cid: str
    visible: int  # when DICT's log shows it
    applied: int | None  # when the local set has it; None: never (a change behind cidsync's back)


@dataclass
class Pair:
    changes: list[Change] = field(default_factory=list)
    initial: set[str] = field(default_factory=set)

    def dict_at(self, t: int) -> set[str]:
        return self._state(self.initial, [c for c in self.changes if c.at <= t])

    def local_at(self, t: int) -> set[str]:
        return self._state(self.initial, [c for c in self.changes if c.applied is not None and c.applied <= t])

    def log_at(self, t: int, since: int) -> list[CIDSetEvent]:
        shown = sorted((c for c in self.changes if c.visible <= t and c.at >= since), key=lambda c: c.at)
        return [CIDSetEvent(type=c.kind, cid=c.cid, timestamp=T + timedelta(milliseconds=c.at)) for c in shown]

    @staticmethod
    def _state(initial: set[str], changes: list[Change]) -> set[str]:
        current = set(initial)
        for change in sorted(changes, key=lambda c: c.at):  # the store orders by core's sequence
            (current.add if change.kind is CIDEventType.ADDED else current.discard)(change.cid)
        return current


def busy_pair(rng: random.Random, end: int, injected_before: int) -> tuple[Pair, set[str], set[str]]:
    """Core's changes all along, and DICT changed behind cidsync's back before `injected_before`."""
    pair = Pair(initial={cid(n) for n in range(30)})
    live, fresh = set(pair.initial), 1_000

    def delays() -> tuple[int, int]:
        return rng.randrange(0, MAX_VISIBILITY + 1), rng.randrange(0, MAX_PIPELINE + 1)

    added, removed = set(), set()
    for _ in range(rng.randrange(2, 6)):
        at = rng.randrange(0, injected_before)
        if rng.random() < 0.5 and live:
            value = rng.choice(sorted(live))
            live.discard(value)  # core no longer touches it: DICT would refuse
            removed.add(value)
            pair.changes.append(Change(at, CIDEventType.REMOVED, value, at + delays()[0], None))
        else:
            value, fresh = cid(fresh), fresh + 1
            added.add(value)
            pair.changes.append(Change(at, CIDEventType.ADDED, value, at + delays()[0], None))
    at = 0
    while at < end:
        at += rng.randrange(1, 120)  # ~20 changes a second, ties within a millisecond included
        visible, applied = delays()
        if rng.random() < 0.55 or not live:  # a creation, often deleted again soon after
            value, fresh = cid(fresh), fresh + 1
            pair.changes.append(Change(at, CIDEventType.ADDED, value, at + visible, at + applied))
            live.add(value)
        else:  # a delete, or an update (the old CID removed, a new one added in the same instant)
            value = rng.choice(sorted(live))
            live.discard(value)
            pair.changes.append(Change(at, CIDEventType.REMOVED, value, at + visible, at + applied))
            if rng.random() < 0.5:
                new, fresh = cid(fresh), fresh + 1
                visible, applied = delays()
                pair.changes.append(Change(at, CIDEventType.ADDED, new, at + visible, at + applied))
                live.add(new)
    return pair, added, removed


def reconcile(pair: Pair, snapshot: int, first_look: int, looks: int) -> tuple[set[str], set[str], int]:
    """ReconcileVSync's diff: the file rolled forward, the diff, then `looks` judgements a grace apart."""
    file = pair.dict_at(snapshot)
    rolled, _ = roll(file, pair.log_at(first_look, snapshot))
    local = pair.local_at(first_look)
    sides = {"dict_only": rolled - local, "local_only": local - rolled}
    confirming: set[str] = set()
    in_flight = 0
    for look in range(1, looks + 1):
        now = first_look + look * GRACE
        rolled, changed = roll(file, pair.log_at(now, snapshot))
        local = pair.local_at(now)
        cutoff = T + timedelta(milliseconds=now - GRACE)
        still: set[str] = set()
        for side in sides.values():
            for value in sorted(side):
                verdict = judge(value in rolled, value in local, changed.get(value), cutoff, value in confirming)
                if verdict in (Verdict.CONFIRMING, Verdict.CONFIRMED):
                    still.add(value)
                if verdict is Verdict.IN_FLIGHT or (look == looks and verdict is not Verdict.CONFIRMED):
                    side.discard(value)
                    in_flight += verdict is Verdict.IN_FLIGHT
        confirming = still
    return sides["dict_only"], sides["local_only"], in_flight


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), snapshot=st.integers(5_000, 9_000), looks=st.integers(2, 4))
def test_the_confirmed_divergence_is_exactly_the_injected_one(seed: int, snapshot: int, looks: int) -> None:
    rng = random.Random(seed)
    first_look = snapshot + rng.randrange(0, 3_000)  # the file is read a while after its snapshot
    pair, added, removed = busy_pair(rng, end=first_look + (looks + 1) * GRACE, injected_before=4_000)
    dict_only, local_only, _in_flight = reconcile(pair, snapshot, first_look, looks)
    assert (dict_only, local_only) == (added, removed)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_diff_against_the_file_alone_counts_changes_in_flight(seed: int) -> None:
    """The control: what the diff counted before it was anchored (file against the local set as read)."""
    rng = random.Random(seed)
    pair, added, removed = busy_pair(rng, end=12_000, injected_before=4_000)
    file, local = pair.dict_at(6_000), pair.local_at(9_000)
    assert (file - local) | (local - file) >= added | removed
    rolled, _ = roll(file, pair.log_at(9_000, 6_000))
    assert len((rolled - local) | (local - rolled)) <= len((file - local) | (local - file))


def test_judge_in_order() -> None:
    cutoff = T
    old, new = T - timedelta(seconds=1), T + timedelta(seconds=1)
    assert judge(True, True, new, cutoff, False) is Verdict.IN_FLIGHT
    assert judge(True, False, new, cutoff, True) is Verdict.RECENT
    assert judge(True, False, old, cutoff, False) is Verdict.CONFIRMING
    assert judge(False, True, None, cutoff, True) is Verdict.CONFIRMED


def test_roll_applies_the_last_event_of_each_cid() -> None:
    at = [T + timedelta(milliseconds=n) for n in range(3)]
    events = [
        CIDSetEvent(type=CIDEventType.ADDED, cid=cid(1), timestamp=at[0]),
        CIDSetEvent(type=CIDEventType.REMOVED, cid=cid(2), timestamp=at[0]),
        CIDSetEvent(type=CIDEventType.REMOVED, cid=cid(1), timestamp=at[1]),
        CIDSetEvent(type=CIDEventType.ADDED, cid=cid(3), timestamp=at[2]),
    ]
    rolled, changed = roll({cid(2), cid(4)}, events)
    assert rolled == {cid(3), cid(4)}
    assert changed == {cid(1): at[1], cid(2): at[0], cid(3): at[2]}
    assert roll(rolled, events)[0] == rolled  # read twice: the same set


SETTLE = MAX_VISIBILITY  # DICT's log is read up to this long ago: every change older than this is shown
LOG_WINDOW = 3_400  # ms of DICT's log a proof reads: the journal's look-back and more than the pipeline's delay
LOOK_BACK = SETTLE + (LOG_WINDOW - SETTLE) // 2  # of the local journal, as `prove_sync` reads it


def journal(pair: Pair, since: int, now: int) -> list[tuple[str, bool]]:
    """The local set's real changes from `since` to `now`, in the order the store made them."""
    entries: list[tuple[str, bool]] = []
    times = sorted({c.applied for c in pair.changes if c.applied is not None and since <= c.applied <= now})
    before = pair.local_at(since - 1)
    for t in times:
        after = pair.local_at(t)
        entries += [(value, False) for value in sorted(before - after)]
        entries += [(value, True) for value in sorted(after - before)]
        before = after
    return entries


def log_proof(pair: Pair, now: int) -> tuple[str, str]:
    """What `prove_sync` computes at `now`: the local set as of the log's point (`now - SETTLE`, where the
    read ends), and DICT's VSync there (its verifier)."""
    point = now - SETTLE
    events = [e for e in pair.log_at(now, now - LOG_WINDOW) if e.timestamp <= T + timedelta(milliseconds=point)]
    states = dict_states(events)
    local = pair.local_at(now)
    reconstructed, _ = as_of(
        vsync(local),
        {c: s.in_dict for c, s in states.items()},
        [c in local for c in states],
        journal(pair, now - LOOK_BACK, now),
    )
    return reconstructed, vsync(pair.dict_at(point))


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), at=st.integers(4_000, 12_000))
def test_a_log_proof_sees_the_local_set_as_of_the_log_point(seed: int, at: int) -> None:
    """However the pipeline and DICT's log race (the local set ahead of the log or behind it), a pair with
    no divergence is proved at every read."""
    rng = random.Random(seed)
    busy, _, _ = busy_pair(rng, end=14_000, injected_before=4_000)
    pair = Pair(changes=[c for c in busy.changes if c.applied is not None], initial=busy.initial)
    reconstructed, dict_vsync = log_proof(pair, at)
    assert reconstructed == dict_vsync


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), at=st.integers(8_000, 12_000))
def test_a_log_proof_never_holds_while_an_old_divergence_remains(seed: int, at: int) -> None:
    rng = random.Random(seed)
    pair, added, removed = busy_pair(rng, end=14_000, injected_before=4_000)  # older than the window
    reconstructed, dict_vsync = log_proof(pair, at)
    assert added | removed
    assert reconstructed != dict_vsync
