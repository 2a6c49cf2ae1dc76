"""Proving a pair while core keeps changing it: one look at DICT's recent log and the local set, then DICT.

DICT's rule wants the participant's VSync to equal DICT's, but a busy pair's local set lags DICT by the
pipeline's latency, so the local VSync alone almost never matches. One call here:
1. reads DICT's CID event log from `window` ago up to `settle` ago (DICT shows an event a moment after
   it is made, and may show it behind later ones: what is older than `settle` is all shown), at most
   `max_pages`; and, for the formal proof, from there to now (what is shown of the changes in flight);
2. reads, at one instant, the local VSync, which of those CIDs the local set holds, and the set's own
   journal of its last changes;
3. the formal proof: predicts DICT's VSync now (`cidsync.anchor.predict`): the local one, with each CID
   the log changed that the local set disagrees on taken as DICT's log has it, and sends it to
   `VerifySync` (what DICT's homologation and the 36-hour rule ask for). It holds when no change is hidden
   between DICT and the local set at the moment DICT answers: on a busy pair, one try in a few;
4. the log-anchored proof: the local set as of the log's point (`cidsync.anchor.as_of`: the prediction,
   less the local changes DICT's log does not show yet) against DICT's own verifier there. It holds at
   any rate, as long as the log window covers the pipeline's delay.
The log read and the verification happen in one activity, with no workflow task between them, so the time
in which a new change can spoil the prediction is as short as the two calls.

A CID taken from DICT's log or undone from the journal is assumed in flight; a change DICT made behind
cidsync's back in the same moments would be taken too. So a proof that took any is provisional:
`confirm_landed`, a grace later, checks that each of them reached the local set as DICT had it (or as DICT
has it now: core changed it again and the local set followed); only then does the workflow count the proof.

A rate-limited `VerifySync` is no failure here: the proof answers with the log's verdict and DICT's
retry-after, and the workflow decides when to try again. What goes back is the VSync, counts, times,
DICT's answer and the CIDs taken as in flight (as the follower's suspects do): no entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, model_validator
from temporalio import activity

from activities.bridge import temporal_error
from activities.cid_file import MAX_EVENTS, read_log_page
from cidsync.anchor import as_of, predict
from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDSetEvent
from cidsync.entry import KeyType
from cidsync.follow import Cursor, dict_states
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys


class ProveInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    # DICT's log is read from `window` ago to `settle` ago, and the local journal from halfway between:
    # the rest of the window must be longer than a change takes to reach the local set.
    window: timedelta = timedelta(seconds=15)
    settle: timedelta = timedelta(seconds=2)  # longer than DICT's log takes to show every change
    formal: bool = True  # also ask DICT (VerifySync: 10 a minute per participant)
    # Without the log (no ListCidSetEvents spent): the local VSync alone goes to VerifySync, which is as good
    # while the pipeline is quicker than DICT's log (what is in flight is not shown there yet anyway).
    read_log: bool = True
    max_pages: int = 3  # of DICT's log (20 calls a minute per participant): a busier window is no proof

    @model_validator(mode="after")
    def _settle_within_window(self) -> ProveInput:
        if not timedelta(0) <= self.settle < self.window:
            raise ValueError("settle must be at least 0 and shorter than window")
        return self

    # A log-anchored proof speaks of its log point (`settle` before the call): one before this says nothing
    # of the pair since, and is no proof (a reconciliation asks for a point after it began).
    not_before: datetime | None = None


class Proof(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    at: datetime
    # The VSync proved: the one sent to VerifySync (the local one with the in-flight CIDs as DICT's log has
    # them) unless only the log proved it, then the local one as of the log's point.
    vsync: str
    in_flight: int  # CIDs taken from DICT's log (or undone from the journal) for that VSync
    taken: dict[str, bool] = {}  # those CIDs, and DICT's state of each (in DICT or not): confirmed later
    log_point: datetime  # DICT's verifier is its VSync here: where the log was read to
    log_ok: bool  # the prediction equals DICT's verifier after the log's last event
    formal_ok: bool | None = None  # VerifySync's answer; None when not asked or rate limited
    verification_id: str = ""
    retry_after: float = 0.0  # seconds, when VerifySync was rate limited
    # Events DICT's log showed in the window and changes the local journal holds: 0 when the pair was quiet,
    # so a NOK then is the pair's own (not a prediction spoilt by a change in flight).
    changes: int = 0

    @property
    def kind(self) -> str:
        """How the pair was proved: `formal` (VerifySync OK), `log` (DICT's verifier matched), or `none`."""
        return "formal" if self.formal_ok else "log" if self.log_ok else "none"


class ConfirmInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    taken: dict[str, bool]  # a proof's CIDs taken as in flight, and DICT's state of each then


class ProofActivities:
    """Built once in the worker with the CID store and the Bridge client injected; `clock` as the follower's."""

    def __init__(self, store: CIDStore, bridge: BridgeClient, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.bridge = bridge
        self.clock = clock or (lambda: datetime.now(UTC))

    @activity.defn(name="prove_sync")
    async def prove_sync(self, request: ProveInput) -> Proof:
        now = self.clock()
        end = now - request.settle
        settled: list[CIDSetEvent] = []  # DICT's log up to `end`: all shown by now, for the log proof
        recent: list[CIDSetEvent] = []  # after it, up to now: what may be in flight, for the formal one
        verifier, covered, log_wait = "", False, 0.0
        try:
            if request.read_log:
                settled, verifier, covered = await self._read(request, now - request.window, end)
                if request.formal and request.settle:
                    recent, _, _ = await self._read(request, end, now)
        except errors.RateLimited as limited:
            # DICT's log is out of budget for now: no log proof this time, and the formal one goes on with
            # what was read (a quiet pair needs nothing more); the caller hears the wait.
            settled, recent, verifier, covered, log_wait = [], [], "", False, limited.retry_after
        # The page's verifier is DICT's VSync after its last event, so at `end` too once the page is the last.
        point = end if covered or not settled else settled[-1].timestamp
        at_end = {c: s.in_dict for c, s in dict_states(settled).items()}
        latest = {c: s.in_dict for c, s in dict_states([*settled, *recent]).items()}
        look_back = request.settle + (request.window - request.settle) / 2
        view = await self.store.view.local_view(
            PairKeys(request.participant, request.key_type), list(latest), changes_since=now - look_back
        )
        local = dict(zip(latest, view.members, strict=True))
        predicted, taken = predict(view.vsync, latest, view.members)
        at_point, taken_at_point = as_of(view.vsync, at_end, [local[c] for c in at_end], view.changes)
        log_ok = covered and at_point == verifier and (request.not_before is None or point >= request.not_before)
        proof = Proof(
            participant=request.participant,
            key_type=request.key_type,
            at=self.clock(),
            vsync=predicted,
            in_flight=len(taken),
            taken=taken,
            log_point=point,
            log_ok=log_ok,
            changes=len(settled) + len(recent) + len(view.changes),
            retry_after=log_wait,
        )
        # A log proof speaks of the instant of its point, not of now: that is its time.
        by_log = proof.model_copy(
            update={"vsync": at_point, "in_flight": len(taken_at_point), "taken": taken_at_point, "at": point}
        )
        if not request.formal:
            return by_log if log_ok else proof
        try:
            answer = await self.bridge.verify_sync(request.participant, request.key_type, predicted)
        except errors.RateLimited as limited:
            wait = max(limited.retry_after, log_wait)
            return (by_log if log_ok else proof).model_copy(update={"retry_after": wait})
        except errors.BridgeError as error:
            raise temporal_error(error) from error
        if log_ok and not answer.ok:
            return by_log.model_copy(update={"formal_ok": False, "verification_id": answer.verification_id})
        answered = {"formal_ok": answer.ok, "verification_id": answer.verification_id, "at": answer.verified_at}
        return proof.model_copy(update=answered)

    async def _read(self, request: ProveInput, start: datetime, end: datetime) -> tuple[list[CIDSetEvent], str, bool]:
        """DICT's log from `start` to `end`, at most `max_pages`: its events, the verifier after the last page,
        and whether the pages covered it all. A rate limit stays `RateLimited`."""
        cursor, events, verifier = Cursor(start=start), list[CIDSetEvent](), ""
        for _ in range(request.max_pages):
            page, fresh, cursor = await read_log_page(
                self.bridge, request.participant, request.key_type, cursor, end, MAX_EVENTS, keep_limits=True
            )
            events += fresh
            verifier = page.verifier_end
            if not page.has_more:
                return events, verifier, True
        return events, verifier, False

    @activity.defn(name="confirm_landed")
    async def confirm_landed(self, request: ConfirmInput) -> list[str]:
        """The CIDs of `taken` that did not land: the local set disagrees with DICT's state of them at the
        proof and with DICT's state now (`GetEntryByCid`: core may have changed one again meanwhile, and the
        local set followed). Empty: the proof stands. The entry DICT answers is looked at for its existence
        only, and never leaves this call."""
        cids = list(request.taken)
        view = await self.store.view.local_view(PairKeys(request.participant, request.key_type), cids)
        missing = []
        for value, local in zip(cids, view.members, strict=True):
            if local == request.taken[value]:
                continue
            try:
                await self.bridge.get_entry_by_cid(request.participant, value)
                in_dict_now = True
            except errors.NotFound:
                in_dict_now = False
            except errors.BridgeError as error:
                raise temporal_error(error) from error
            if local != in_dict_now:
                missing.append(value)
        return missing
