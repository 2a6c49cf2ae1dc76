"""Core's order on a dev stack: each change made in DICT (the simulator) before its event is published.

Core registers, updates or deletes an entry in DICT and publishes the event once DICT accepted it. A dev
stack whose events skip DICT holds CIDs its DICT never heard of, and its follower and reconciliations then
undo them. `cidsync publish`, the demo and the tests publish through this.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cidsync.events import DeletionType, EntryEvent
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.simulator.dict_state import ChangeOutcome


class DictFirst:
    # A WAITING_PERIOD delete leaves DICT's entry in place until its waiting period ends (30 days); the
    # simulator has no clock for that, so its DICT keeps the entry: counted under this name.
    WAITING = "waiting_period"

    def __init__(self, admin: SimulatorAdmin) -> None:
        self.admin = admin
        self.outcomes: Counter[str] = Counter()
        self.refusals: list[tuple[EntryEvent, str]] = []

    async def refused(self, events: Sequence[EntryEvent]) -> set[int]:
        """Make the changes of `events` in DICT in commit (`sequence`) order; the positions DICT refused,
        whose events core would not publish. A repeat DICT already reflects is not refused."""
        ordered = sorted(range(len(events)), key=lambda i: events[i].sequence)
        told = [i for i in ordered if events[i].deletion_type is not DeletionType.WAITING_PERIOD]
        self.outcomes[self.WAITING] += len(ordered) - len(told)
        results = await self.admin.apply_changes([(events[i].event_type, events[i].entry) for i in told])
        refused = set()
        for index, (outcome, reason) in zip(told, results, strict=True):
            self.outcomes[outcome] += 1
            if outcome is ChangeOutcome.REFUSED:
                refused.add(index)
                self.refusals.append((events[index], reason))
        return refused

    async def accepted(self, events: Sequence[EntryEvent]) -> list[EntryEvent]:
        """`events` in their order, less those DICT refused."""
        refused = await self.refused(events)
        return [event for index, event in enumerate(events) if index not in refused]
