"""Following DICT's CID event log (continuous verification, docs/design.md §3): the rules, with no I/O.

DICT's log (`listCidSetEvents`) says, per pair, which CIDs joined (ADDED) and left (REMOVED) its set and
when, 200 at a time, paged by time with an inclusive start. From it:

- `Cursor` reads the log exactly once: the next page starts at the last event's timestamp, and the events
  already taken at that instant are dropped when the page repeats them.
- `dict_states` is DICT's state of each CID after a run of events: the last event for a CID wins, so a
  CID added and removed again within the window is simply absent (an update and its revert cancel).
- A CID whose DICT state differs from the local set is a *suspect*. Core changes DICT first and
  publishes the event after, so most suspects are events still on their way: `merge` drops a suspect as
  soon as the local set agrees, and only one still disagreeing when its grace period is over (`due`) is
  repaired.
- `page_consistent`: DICT's verifiers are its VSync after the page's first event and after its last, so
  the page's CIDs but the first, XORed into the first, must give the last. A page that breaks this (or an
  event DICT has not shown yet lies inside it) cannot be trusted as a proof.

CIDs and timestamps are all this module sees: no entry, no personal data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from cidsync.bridge.models import CIDEventType, CIDSetEvent, CIDSetEvents


class LogError(Exception):
    """DICT's log broke its own paging contract (time went backwards, or a page cannot be left)."""


def event_key(event: CIDSetEvent) -> str:
    """What tells two events apart at the same instant: a CID is added or removed at most once then."""
    return f"{event.type.value}:{event.cid}"


class Cursor(BaseModel):
    """Where the follower is in DICT's log: durable, in the workflow's state, carried over continue-as-new."""

    model_config = ConfigDict(frozen=True)

    start: datetime  # the next page starts here, inclusively
    seen: tuple[str, ...] = ()  # `event_key`s of the events at exactly `start` already taken

    def take(self, page: CIDSetEvents) -> tuple[list[CIDSetEvent], Cursor]:
        """The page's events not taken before, and the cursor after the page.

        Raises `LogError` when the page goes back before the cursor, or when a full page holds only
        events at the cursor's instant (the log cannot be paged past it: more than a page of changes in
        one timestamp)."""
        if not page.events:
            return [], self
        if page.events[0].timestamp < self.start:
            raise LogError(f"DICT's log answered an event at {page.events[0].timestamp}, before {self.start}")
        if any(
            later.timestamp < earlier.timestamp for earlier, later in zip(page.events, page.events[1:], strict=False)
        ):
            raise LogError("DICT's log answered a page out of time order")
        fresh = [e for e in page.events if not (e.timestamp == self.start and event_key(e) in self.seen)]
        last = page.events[-1].timestamp
        at_last = [event_key(e) for e in page.events if e.timestamp == last]
        if last == self.start:
            if page.has_more:  # the next page would start at the same instant and answer the same events
                raise LogError(f"more than one page of DICT's log at {last}: the cursor cannot move on")
            at_last = [*self.seen, *at_last]
        return fresh, Cursor(start=last, seen=tuple(dict.fromkeys(at_last)))


class DictState(BaseModel):
    """DICT's state of one CID, from the last event the log showed for it."""

    model_config = ConfigDict(frozen=True)

    cid: str
    in_dict: bool  # True after ADDED, False after REMOVED
    changed_at: datetime  # DICT's timestamp of that event


def dict_states(events: Iterable[CIDSetEvent]) -> dict[str, DictState]:
    """DICT's state of every CID the events touch, the last event for a CID winning (events oldest first)."""
    return {e.cid: DictState(cid=e.cid, in_dict=e.type is CIDEventType.ADDED, changed_at=e.timestamp) for e in events}


def page_consistent(page: CIDSetEvents) -> bool:
    """Whether the page's events after its first turn DICT's VSync after the first into DICT's VSync after
    the last (DICT's SyncVerifierStart and SyncVerifierEnd). A page with no event has nothing to check."""
    value = int(page.verifier_start, 16)
    for event in page.events[1:]:
        value ^= int(event.cid, 16)
    return value == int(page.verifier_end, 16)


class Observation(BaseModel):
    """A CID whose DICT state was compared with the local set: `local` is whether the local set has it."""

    model_config = ConfigDict(frozen=True)

    cid: str
    in_dict: bool
    changed_at: datetime
    local: bool

    @property
    def agrees(self) -> bool:
        return self.in_dict == self.local


def observe(states: Iterable[DictState], local: Sequence[bool]) -> list[Observation]:
    """Pair DICT's states with the local set's answers (in the same order)."""
    return [
        Observation(cid=s.cid, in_dict=s.in_dict, changed_at=s.changed_at, local=has)
        for s, has in zip(states, local, strict=True)
    ]


class Suspect(BaseModel):
    """A CID on which DICT and the local set disagree, waiting out its grace period."""

    model_config = ConfigDict(frozen=True)

    cid: str
    in_dict: bool  # what DICT holds: repair adds the CID locally when True, removes it when False
    changed_at: datetime
    due: datetime  # repaired from then on if the local set still disagrees

    @property
    def state(self) -> DictState:
        return DictState(cid=self.cid, in_dict=self.in_dict, changed_at=self.changed_at)


class Merged(BaseModel):
    model_config = ConfigDict(frozen=True)

    suspects: dict[str, Suspect]
    resolved: int  # suspects the local set came to agree with (their events arrived)
    new: int  # CIDs that became suspects


def merge(suspects: dict[str, Suspect], observations: Iterable[Observation], grace: timedelta) -> Merged:
    """The suspects after a look at the log and the local set.

    An agreeing observation ends its suspect. A disagreeing one starts a suspect due `grace` after
    DICT's change, or keeps an existing suspect's due time when DICT's state is the one already
    suspected (a suspect's clock restarts only when DICT changes the CID again)."""
    result = dict(suspects)
    resolved = new = 0
    for seen in observations:
        before = result.get(seen.cid)
        if seen.agrees:
            if result.pop(seen.cid, None) is not None:
                resolved += 1
            continue
        if before is not None and (before.in_dict, before.changed_at) == (seen.in_dict, seen.changed_at):
            continue
        new += before is None
        result[seen.cid] = Suspect(
            cid=seen.cid, in_dict=seen.in_dict, changed_at=seen.changed_at, due=seen.changed_at + grace
        )
    return Merged(suspects=result, resolved=resolved, new=new)


def watch(
    watches: dict[str, Suspect],
    suspects: dict[str, Suspect],
    observations: Iterable[Observation],
    grace: timedelta,
    now: datetime,
    most: int,
) -> dict[str, Suspect]:
    """The watches after a look: removals DICT made and the local set agrees on are watched until their
    grace ends (`due`), since a late creation event could still bring the CID back locally with no log event
    left to explain it. A watched CID that became a suspect leaves the watches (`merge` judges it now); an
    expired one leaves too; past `most`, the oldest changes go first."""
    result = {c: w for c, w in watches.items() if c not in suspects and w.due > now}
    for seen in observations:
        if seen.agrees and not seen.in_dict and seen.cid not in suspects and seen.changed_at + grace > now:
            result[seen.cid] = Suspect(
                cid=seen.cid, in_dict=False, changed_at=seen.changed_at, due=seen.changed_at + grace
            )
    if len(result) > most:
        result = dict(sorted(result.items(), key=lambda item: item[1].changed_at)[len(result) - most :])
    return result


def due(suspects: dict[str, Suspect], now: datetime) -> list[Suspect]:
    """The suspects whose grace period is over, oldest change first."""
    return sorted((s for s in suspects.values() if s.due <= now), key=lambda s: (s.changed_at, s.cid))
