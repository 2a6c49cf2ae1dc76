"""A diff anchored in time: DICT's CID file rolled forward with DICT's log, and only lasting differences counted.

A pair core keeps changing never stands still, so three instants differ: the file holds DICT's set at its
`created_at` (DICT's CreationTime, minutes before it can be read), DICT's log shows each change a moment
after it is made, and the local set gets each change after core publishes it. Compared as they come, every
change in between reads as divergence (issue: 118 CIDs counted for 5 injected at 20 changes/s). So:

1. `roll`: the file's set, with every later event of DICT's log applied in time order (ADDED puts the CID
   in, REMOVED takes it out; the last event for a CID wins, so an event read twice changes nothing), is
   DICT's set at the log's head. The window is read from the snapshot inclusively: an event at the
   snapshot's own millisecond is applied again, harmlessly.
2. The diff of that set with the local set gives *candidates*: the real divergence, plus changes in
   flight either way (DICT ahead: core's event not applied yet; local ahead: DICT's log not showing the
   change yet).
3. `judge`, after `grace` (longer than the pipeline's latency plus the log's visibility delay) and a new
   read of the log: a candidate DICT and the local set now agree on was in flight; one DICT changed within
   the last `grace` is still *recent* (looked at again later); one that still differs with no recent
   change in DICT is *confirmed* once it has differed so at two looks a grace apart: divergence, counted,
   and repaired with the usual compare-and-set. Two looks, because a change core made in the last moments
   may be applied locally but not yet shown by DICT's log: at the next look it shows, and the CID is in
   flight or recent instead.

A proof while the pair changes (`predict`): core's changes reach the local set a moment after DICT, so the
local VSync rarely equals DICT's at any instant. Take the CIDs DICT's log changed in the last moments, and
for each one the local set disagrees on, DICT's state instead of the local one: that *predicted* VSync is
what DICT holds if the local set has no divergence. `VerifySync` of it answering OK is a formal proof.
A log-anchored proof (`as_of`) compares DICT's own verifier after the log's last event (SyncVerifierEnd)
with the local set as of that event: the prediction, less the local changes the log does not show yet
(the local set is often quicker than DICT's log).

CIDs and timestamps are all this module sees.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from cidsync.bridge.models import CIDEventType, CIDSetEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # DICT's timestamps are kept as milliseconds since it


class Verdict(StrEnum):
    IN_FLIGHT = "in flight"  # DICT and the local set agree now: it was a change on its way
    RECENT = "recent"  # DICT changed the CID within the grace period: too soon to tell
    CONFIRMING = "confirming"  # differs with no recent change in DICT, at one look: confirmed at the next
    CONFIRMED = "confirmed"  # so at two looks a grace apart: divergence


def roll(snapshot: Iterable[str], events: Iterable[CIDSetEvent]) -> tuple[set[str], dict[str, datetime]]:
    """DICT's set after `events` (oldest first) applied to the file's set, and when each CID last changed."""
    current = set(snapshot)
    changed: dict[str, datetime] = {}
    for event in events:
        if event.type is CIDEventType.ADDED:
            current.add(event.cid)
        else:
            current.discard(event.cid)
        changed[event.cid] = event.timestamp
    return current, changed


def predict(local_vsync: str, in_dict: Mapping[str, bool], local: Sequence[bool]) -> tuple[str, dict[str, bool]]:
    """The local VSync with each recently changed CID taken as DICT has it (`in_dict`, from DICT's log; `local`
    the local set's membership of the same CIDs, in the same order): the VSync, and the CIDs taken (with
    DICT's state of each)."""
    value, taken = int(local_vsync, 16), {}
    for (cid, has), local_has in zip(in_dict.items(), local, strict=True):
        if has != local_has:
            value ^= int(cid, 16)
            taken[cid] = has
    return format(value, "064x"), taken


def as_of(
    local_vsync: str, in_dict: Mapping[str, bool], local: Sequence[bool], changes: Sequence[tuple[str, bool]]
) -> tuple[str, dict[str, bool]]:
    """The local set's VSync as of the point of DICT's log that `in_dict` ends at, for a log-anchored proof:
    `predict`'s, and each CID the local set changed lately (`changes`: its journal, (CID, added), oldest
    first) that the log does not show is taken as it was before those changes: DICT's change of it, if it
    had one, came after the log's point (the pipeline was quicker than the log). With the CIDs taken and
    the state taken for each."""
    predicted, taken = predict(local_vsync, in_dict, local)
    value, undone = undo_unshown(predicted, in_dict, changes)
    return value, {**taken, **undone}


def undo_unshown(
    local_vsync: str, shown: Container[str], changes: Sequence[tuple[str, bool]]
) -> tuple[str, dict[str, bool]]:
    """The local VSync with each CID the local set changed lately (`changes`: its journal, (CID, added),
    oldest first) and DICT's log does not show (not in `shown`) taken as it was before those changes: the
    pipeline was quicker than the log, so DICT's change of it, if it had one, came after the log's point.
    With those CIDs and the state taken for each."""
    value, undone = int(local_vsync, 16), {}
    first: dict[str, bool] = {}
    last: dict[str, bool] = {}
    for cid, added in changes:
        first.setdefault(cid, added)
        last[cid] = added
    for cid, added in first.items():
        before = not added  # only real changes are journalled: an addition means the CID was absent
        if cid not in shown and before != last[cid]:
            value ^= int(cid, 16)
            undone[cid] = before
    return format(value, "064x"), undone


def judge(in_dict: bool, local: bool, changed_at: datetime | None, cutoff: datetime, confirming: bool) -> Verdict:
    """A candidate's verdict now: `in_dict` from the rolled-forward file, `local` from the local set,
    `changed_at` DICT's last change of the CID since the snapshot (None: none), `cutoff` now less grace,
    `confirming` whether the previous look found it CONFIRMING."""
    if in_dict == local:
        return Verdict.IN_FLIGHT
    if changed_at is not None and changed_at > cutoff:
        return Verdict.RECENT
    return Verdict.CONFIRMED if confirming else Verdict.CONFIRMING
