"""An in-memory DICT: the entries of each (participant, key type), their CIDs, VSync and CID events.

It uses the project's own CID code, so "the simulator agrees" means "DICT's algorithm agrees". Entries
are kept as compact JSON (about 450 bytes each) so a million-CID set stays within a few hundred MB.
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from cidsync.bridge.models import CIDEventType, FileStatus
from cidsync.cid import cid as cid_of
from cidsync.entry import Entry, KeyType, parse_entry_json
from cidsync.errors import InvalidInput, Problem
from cidsync.events import EventType
from cidsync_tooling.synthetic import pair_random, synthetic_entry

Pair = tuple[str, KeyType]


class ChangeOutcome(StrEnum):
    APPLIED = "applied"
    ALREADY = "already"  # DICT already holds the change's result
    REFUSED = "refused"


@dataclass
class SimFile:
    file_id: str
    participant: str
    key_type: KeyType
    cids: list[str]  # DICT's set at `created_at`, sorted: the file's lines (empty before the snapshot)
    requested_at: datetime
    status: FileStatus = FileStatus.REQUESTED
    byte_size: int = 0
    sha256: str = ""
    available_at: datetime | None = None
    # The instant whose set the file holds (DICT's CreationTime): after the request, before AVAILABLE.
    created_at: datetime | None = None
    request_id: str = ""  # the requester's idempotency key

    def seal(self, outcome: FileStatus, now: datetime) -> None:
        if outcome is FileStatus.AVAILABLE:
            digest = hashlib.sha256()
            for value in self.cids:
                digest.update(value.encode() + b"\n")
            self.sha256 = digest.hexdigest()
            self.byte_size = 65 * len(self.cids)
            self.available_at = now
        else:
            self.cids = []
        self.status = outcome


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
MICROSECOND = timedelta(microseconds=1)  # the journal's unit


@dataclass(frozen=True)
class EventPage:
    """One answer of `listCidSetEvents`: events oldest first, and DICT's VSync after the first and the last."""

    events: list[tuple[datetime, CIDEventType, str]]
    has_more: bool
    verifier_start: str
    verifier_end: str


class EventLog:
    """A pair's CID event log as DICT keeps it: every change to the set, oldest first.

    As DICT's: timestamps are milliseconds, so changes made in the same millisecond share one (ties);
    a page is the events with `start <= timestamp <= end` (both inclusive), and its verifiers are DICT's
    VSync just after its first event and just after its last. An event becomes visible to readers only
    `visible_after` seconds after its timestamp (DICT writes its log asynchronously): a page leaves out what
    is not visible yet, so an event may appear later behind events already read, while the verifiers stay
    DICT's own (they count the hidden events). DICT's VSync at any point is a checkpoint (kept every
    `CHECKPOINT` events) XORed with the CIDs after it, so a page's verifiers cost at most that many XORs
    and the log stays compact (parallel arrays, the CID strings shared with the entries) for a
    million-CID pair.
    """

    CHECKPOINT = 1024
    TIES = 50  # events of one pair in one millisecond, at most

    def __init__(self) -> None:
        self.at_ms: list[int] = []
        self.visible_ms: list[int] = []  # when each event becomes visible to readers
        self.kinds = bytearray()  # 1 ADDED, 0 REMOVED
        self.cids: list[str] = []
        self._checkpoints: list[int] = [0]  # VSync before event k * CHECKPOINT
        self._vsync = 0
        self._hidden = 0  # events appended with a visibility delay: 0 lets a page skip the filter

    def __len__(self) -> int:
        return len(self.cids)

    def append(self, now: datetime, kind: CIDEventType, value: str, visible_after: float = 0.0) -> None:
        index = len(self.cids)
        if index and index % self.CHECKPOINT == 0:
            self._checkpoints.append(self._vsync)
        moment = (now - EPOCH) // MILLISECOND
        at = max(moment, self.at_ms[-1]) if self.at_ms else moment  # DICT's clock never goes back
        # Ties are real (changes in one millisecond), but DICT never makes a page's worth of changes to one
        # pair in one: the simulator's bulk loads would, so past `TIES` their events move to the next ms.
        if index >= self.TIES and self.at_ms[index - self.TIES] == at:
            at += 1
        self.at_ms.append(at)
        self.visible_ms.append(at + round(visible_after * 1000))
        self._hidden += visible_after > 0
        self.kinds.append(kind is CIDEventType.ADDED)
        self.cids.append(value)
        self._vsync ^= int(value, 16)

    def vsync_before(self, index: int) -> int:
        """DICT's VSync of the pair just before event `index` (after them all for `len(self)`)."""
        base = index // self.CHECKPOINT
        value = self._checkpoints[base]
        for position in range(base * self.CHECKPOINT, index):
            value ^= int(self.cids[position], 16)
        return value

    def page(self, start: datetime, end: datetime, limit: int, now: datetime | None = None) -> EventPage:
        """The visible events with `start <= timestamp <= end`, at most `limit`, and DICT's verifiers."""
        low = bisect.bisect_left(self.at_ms, -(-(start - EPOCH) // MILLISECOND))
        high = bisect.bisect_right(self.at_ms, (end - EPOCH) // MILLISECOND, lo=low)
        if self._hidden:
            seen_at = ((now or datetime.now(UTC)) - EPOCH) // MILLISECOND
            indexes = [i for i in range(low, high) if self.visible_ms[i] <= seen_at]
        else:
            indexes = list(range(low, high))
        chosen = indexes[:limit]
        events = [
            (
                EPOCH + self.at_ms[i] * MILLISECOND,
                CIDEventType.ADDED if self.kinds[i] else CIDEventType.REMOVED,
                self.cids[i],
            )
            for i in chosen
        ]
        # An empty page: DICT's VSync at `end` for both (no event to be after).
        first, last = (chosen[0] + 1, chosen[-1] + 1) if chosen else (high, high)
        return EventPage(
            events=events,
            has_more=len(indexes) > limit,
            verifier_start=format(self.vsync_before(first), "064x"),
            verifier_end=format(self.vsync_before(last), "064x"),
        )


@dataclass
class _PairState:
    entries: dict[str, str] = field(default_factory=dict)  # cid -> entry JSON
    vsync: int = 0
    events: EventLog = field(default_factory=EventLog)


Record = Callable[[dict[str, Any]], None]


class SimulatedDict:
    """DICT's state. `record`, when set (by `Journal.restore`), is given each change once it is made, as the
    journal keeps it: the public changes only, so a replay through the same methods makes each one again."""

    def __init__(self) -> None:
        self._pairs: dict[Pair, _PairState] = {}
        self._by_entry_id: dict[uuid.UUID, tuple[Pair, str]] = {}
        self._by_key: dict[tuple[KeyType, str], uuid.UUID] = {}
        self.files: dict[str, SimFile] = {}
        self.file_requests: dict[tuple[str, str], str] = {}  # (participant, request id) -> file id
        self.record: Record | None = None
        # Seconds from a change to its event being visible in the log (the simulator sets a jittered one).
        self.event_delay: Callable[[], float] = lambda: 0.0

    def _note(self, op: str, now: datetime, **fields: Any) -> None:
        if self.record is not None:
            self.record({"op": op, "at": (now - EPOCH) // MICROSECOND, **fields})

    def _pair(self, pair: Pair) -> _PairState:
        return self._pairs.setdefault(pair, _PairState())

    def entry_count(self) -> int:
        return sum(len(state.entries) for state in self._pairs.values())

    def _add(self, entry: Entry, now: datetime) -> str:
        pair = (entry.participant, entry.key_type)
        value = cid_of(entry)
        state = self._pair(pair)
        state.entries[value] = entry.model_dump_json()
        state.vsync ^= int(value, 16)
        state.events.append(now, CIDEventType.ADDED, value, self.event_delay())
        self._by_entry_id[entry.id] = (pair, value)
        self._by_key[(entry.key_type, entry.key)] = entry.id
        return value

    def _drop(self, pair: Pair, value: str, now: datetime) -> Entry:
        state = self._pairs[pair]
        entry = Entry.model_validate_json(state.entries.pop(value))
        state.vsync ^= int(value, 16)
        state.events.append(now, CIDEventType.REMOVED, value, self.event_delay())
        del self._by_entry_id[entry.id]
        del self._by_key[(entry.key_type, entry.key)]
        return entry

    def register(self, entry: Entry, now: datetime) -> str:
        """A new active entry. DICT keys are unique across participants; ids are unique too."""
        owner = self._by_key.get((entry.key_type, entry.key))
        if owner is not None or entry.id in self._by_entry_id:
            raise InvalidInput("entry", [Problem("entry", f"entry {entry.id}: the key or the id is already in DICT")])
        value = self._add(entry, now)
        self._note("register", now, entry=entry.model_dump_json())
        return value

    def alter(self, entry: Entry, now: datetime) -> tuple[str, str]:
        """Replace the entry with the same id: an update, so its CID changes."""
        found = self._by_entry_id.get(entry.id)
        if found is None:
            raise InvalidInput("entry", [Problem("entry.id", f"no entry {entry.id} in DICT")])
        pair, old = found
        if (entry.participant, entry.key_type) != pair:
            raise InvalidInput("entry", [Problem("entry", "an update keeps the participant and key type")])
        self._drop(pair, old, now)
        new = self._add(entry, now)
        self._note("alter", now, entry=entry.model_dump_json())
        return old, new

    def remove(self, value: str, now: datetime) -> bool:
        for pair, state in self._pairs.items():
            if value in state.entries:
                self._drop(pair, value, now)
                self._note("remove", now, cid=value)
                return True
        return False

    def apply_change(self, event_type: EventType, entry: Entry, now: datetime) -> tuple[ChangeOutcome, str]:
        """Core's change to DICT, made before its event is published: the outcome, and why when refused.

        A change whose result DICT already holds is ALREADY (a repeat: core publishes the event again,
        and cidsync must take it as a duplicate); one DICT would refuse is REFUSED."""
        found = self._by_entry_id.get(entry.id)
        if event_type is EventType.DELETED:
            if found is None:
                return ChangeOutcome.ALREADY, ""
            self.remove(found[1], now)
            return ChangeOutcome.APPLIED, ""
        if found is not None and found[1] == cid_of(entry):
            return ChangeOutcome.ALREADY, ""
        try:
            if event_type is EventType.CREATED:
                self.register(entry, now)
            else:
                self.alter(entry, now)
        except InvalidInput as error:
            return ChangeOutcome.REFUSED, error.summary()
        return ChangeOutcome.APPLIED, ""

    def vsync(self, pair: Pair) -> str:
        state = self._pairs.get(pair)
        return format(state.vsync if state else 0, "064x")

    def find(self, participant: str, value: str) -> Entry | None:
        for (owner, _), state in self._pairs.items():
            if owner == participant and value in state.entries:
                return parse_entry_json(state.entries[value])
        return None

    def cids(self, pair: Pair) -> list[str]:
        state = self._pairs.get(pair)
        return sorted(state.entries) if state else []

    def events(self, pair: Pair, start: datetime, end: datetime, limit: int) -> EventPage:
        return self._pair(pair).events.page(start, end, limit)

    def new_file(
        self, participant: str, key_type: KeyType, now: datetime, request_id: str = "", file_id: str | None = None
    ) -> SimFile:
        """A CID file of the pair, requested now; `request_id` is its idempotency key. Its content is the set
        at a later instant, when DICT gets to it (`snapshot`)."""
        file_id = file_id or str(uuid.uuid4())
        file = SimFile(file_id, participant, key_type, [], now, request_id=request_id)
        self.files[file_id] = file
        if request_id:
            self.file_requests[(participant, request_id)] = file_id
        return file

    def snapshot(self, file: SimFile, now: datetime, outcome: FileStatus) -> None:
        """DICT starts making the file: the pair's set as it is now is what the file will hold."""
        file.cids = self.cids((file.participant, file.key_type))
        file.created_at = now
        file.status = FileStatus.PROCESSING
        self._note(
            "file",
            now,
            file_id=file.file_id,
            participant=file.participant,
            key_type=file.key_type.value,
            outcome=outcome.value,
            requested_at=(file.requested_at - EPOCH) // MICROSECOND,
            request_id=file.request_id,
        )

    def load_synthetic(self, pair: Pair, count: int, seed: int, now: datetime | None = None) -> int:
        """`count` synthetic entries of one pair, from `seed`; a key DICT already holds is skipped."""
        rng = pair_random(pair[0], pair[1], seed)
        now = now or self.now()
        loaded = 0
        for _ in range(count):
            entry = synthetic_entry(rng, pair[0], pair[1])
            if (entry.key_type, entry.key) not in self._by_key and entry.id not in self._by_entry_id:
                self._add(entry, now)
                loaded += 1
        self._note("synthetic", now, participant=pair[0], key_type=pair[1].value, count=count, seed=seed)
        return loaded

    def diverge(
        self, pair: Pair, *, add: int, remove: int, alter: int, seed: int, now: datetime
    ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
        """Change DICT behind the participant's back: new entries, deletions and updates.

        The same seed gives the same changes for the same pair (`pair_random`)."""
        rng = pair_random(pair[0], pair[1], seed)
        existing = self.cids(pair)
        chosen = rng.sample(existing, min(len(existing), remove + alter))
        removed = [value for value in chosen[:remove] if self.remove(value, now)]
        altered = []
        for value in chosen[remove:]:
            entry = Entry.model_validate_json(self._pairs[pair].entries[value])
            changed = entry.model_copy(update={"account_number": str(rng.randrange(10**9, 10**10))})
            altered.append(self.alter(changed, now))
        added = [self.register(synthetic_entry(rng, pair[0], pair[1]), now) for _ in range(add)]
        return added, removed, altered

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)
