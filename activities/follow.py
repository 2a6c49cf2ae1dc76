"""The event-log follower's look at DICT and at the local set: one page of `listCidSetEvents`, compared.

One call reads one page from the follower's cursor (one of DICT's 20 calls a minute per participant),
takes DICT's state of each CID it touches, and reads at one instant which of those CIDs, and of the
suspects the follower already holds, the local set has, with the local VSync as of the page's end (the
set's own journal undoes what it changed since that DICT's log does not show yet). What goes back into
history is the cursor, counts, the two VSyncs and the CIDs that disagree (or stopped disagreeing): never
an entry, and never the page itself.

A refusal by DICT's rate limit becomes a retry after DICT's retry-after (`temporal_error`). A page that
breaks the log's paging contract fails the attempt (retried, visible as the pending activity's last
failure), since nothing after it can be read safely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from activities.cid_file import MAX_EVENTS, read_log_page
from cidsync.anchor import undo_unshown
from cidsync.bridge.client import BridgeClient
from cidsync.entry import KeyType
from cidsync.follow import Cursor, DictState, Observation, dict_states, observe, page_consistent
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys

logger = logging.getLogger(__name__)

MAX_PAGE = MAX_EVENTS


class PollInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    cursor: Cursor
    suspects: list[DictState]  # looked at again: the local set may agree with them by now (watches too)
    limit: int = MAX_PAGE
    # DICT's log is read up to `settle` ago: it writes its log asynchronously, and an event it shows late
    # must not land behind the cursor (EndTime is inclusive; what is older than this is all shown).
    settle: timedelta = timedelta(0)


class PollResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    cursor: Cursor
    polled_at: datetime  # the page's end: DICT's log was read up to here (unless `has_more`)
    events: int  # new events on the page (the repeated boundary excluded)
    has_more: bool
    consistent: bool  # the page's CIDs turn its start verifier into its end one
    dict_vsync: str  # DICT's VSync after the page (SyncVerifierEnd)
    # The local set's VSync and count as of the page's end (`polled_at`): its journalled changes since then
    # of CIDs the page does not show are undone (`cidsync.anchor.undo_unshown`).
    local_vsync: str
    local_count: int
    # The CIDs that disagree, the suspects given that agree now (the follower drops those), and the fresh
    # CIDs DICT removed that the local set agrees on (the follower watches them through their grace: a late
    # creation event could still bring one back locally).
    observations: list[Observation]


class FollowActivities:
    """Built once in the worker with the CID store and the Bridge client injected. `clock` is where the
    page ends (DICT's log is read up to now); the time-skipping tests pass the server's clock."""

    def __init__(self, store: CIDStore, bridge: BridgeClient, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.bridge = bridge
        self.clock = clock or (lambda: datetime.now(UTC))

    @activity.defn(name="poll_cid_events")
    async def poll_cid_events(self, request: PollInput) -> PollResult:
        now = self.clock() - request.settle
        if now <= request.cursor.start:
            # The run began within the settle time: nothing of DICT's log is settled yet, so nothing is
            # read (DICT refuses an end before the start); the next poll will.
            return PollResult(
                cursor=request.cursor,
                polled_at=request.cursor.start,
                events=0,
                has_more=True,
                consistent=True,
                dict_vsync="",
                local_vsync="",
                local_count=0,
                observations=[],
            )
        page, fresh, cursor = await read_log_page(
            self.bridge, request.participant, request.key_type, request.cursor, now, request.limit
        )
        consistent = page_consistent(page)
        if not consistent:
            logger.warning(
                "DICT's log page from %s for %s %s: its CIDs do not lead from its start verifier to its end one",
                request.cursor.start,
                request.participant,
                request.key_type.value,
            )
        states = {s.cid: s for s in request.suspects}
        states.update(dict_states(fresh))
        ordered = list(states.values())
        pair = PairKeys(request.participant, request.key_type)
        # The local set as of the page's end: core's last changes may have reached it before DICT's log
        # shows them (read up to `settle` ago), and on a busy pair some always have. Compared as it is now,
        # the set would differ from DICT's verifier at every poll with no suspect to explain it, and the
        # follower would hand the pair to ReconcileVSync every `unexplained_after`.
        view = await self.store.view.local_view(pair, [s.cid for s in ordered], changes_since=now)
        local_vsync, undone = undo_unshown(view.vsync, states, view.changes)
        suspected = {s.cid for s in request.suspects}
        observations = [
            o for o in observe(ordered, view.members) if not o.agrees or o.cid in suspected or not o.in_dict
        ]
        return PollResult(
            cursor=cursor,
            polled_at=cursor.start if page.has_more else now,
            events=len(fresh),
            has_more=page.has_more,
            consistent=consistent,
            dict_vsync=page.verifier_end,
            local_vsync=local_vsync,
            local_count=view.count + sum(1 if present else -1 for present in undone.values()),
            observations=observations,
        )
