"""ReconcileVSync: prove a (participant, key type)'s VSync to DICT and, on NOK, repair the local base.

docs/design.md §1 "Reconciliation rule" and §3. One run per pair at a time: the workflow id is the pair's
(`reconcile-<participant>-<key type>`) and every start uses USE_EXISTING, so a second trigger joins.

Each round: verify. OK ends the run. NOK: begin watching the pair's keys (an event from now on makes its
key off-limits to this round's repair), get a CID file, stream it into Redis, roll it forward with DICT's
CID event log from its snapshot to now, diff it there, and judge the diff again after `grace` (changes in
flight land meanwhile: only a difference that outlives them is divergence, `cidsync.anchor`); then wait
for an operator above the divergence threshold, repair in batches, publish the notifications to core, and
verify again. After `max_rounds` repairs still NOK, the run fails loudly.

What crosses this workflow's history is counts, ids and statuses, never a CID list or an entry.

Exactly one CID file per need: the request carries an idempotency key derived from this run, recorded in
history before the call, so an activity retry or a worker crash asks DICT for the same file again and DICT
(the Bridge) answers with the one it made. A rate-limit refusal is waited out on a durable timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows.versioning import LONG_WAIT

with workflow.unsafe.imports_passed_through():
    from activities.bridge import BridgeActivities, CreateFileRequest, FileRef, VerifyRequest
    from activities.cid_file import CIDFileActivities, JudgeInput, RollInput, StreamFileInput
    from activities.cid_store import StoreActivities, WatchRequest
    from activities.core_events import CoreEventsPublisher, NoticeInput
    from activities.proof import ConfirmInput, Proof, ProofActivities, ProveInput
    from activities.repair import RepairActivities, RepairInput, RepairResult
    from cidsync.bridge.models import CIDSetFile, FileStatus
    from cidsync.core_events import ApprovalNeeded, Outcome, ReconciliationCompleted, event_id
    from cidsync.entry import KeyType, PairRef, Participant
    from cidsync.follow import Cursor
    from cidsync.naming import (
        AWAITING_APPROVAL,
        OUTCOME,
        PHASE,
        reconcile_search_attributes,
        reconcile_summary,
        reconcile_workflow_id,
    )
    from cidsync.store.layout import RepairSide, Scratch
    from cidsync.store.models import DiffResult, JudgedDiff, VerificationRecord
    from workflows.policies import (
        ANCHORED_DIFF,
        BRIDGE_CALL,
        BRIDGE_GIVE_UP,
        BRIDGE_RETRY,
        CANCEL_DURING_ACTIVITY,
        CID_FILE_MISMATCH,
        FORMAL_AFTER_LOG,
        LANDING_PATIENCE,
        NOTICE_RETRY,
        NOTICE_TIMEOUT,
        PHASE_SEARCH_ATTRIBUTE,
        PROOF_WHILE_CHANGING,
        RATE_LIMITED,
        RECONCILIATION_FAILED,
        REPAIR_RETRY,
        STORE_RETRY,
        STORE_TIMEOUT,
        STREAM_FILE_RETRY,
        publish_outbox,
        require_positive,
    )

Arg = TypeVar("Arg")
Result = TypeVar("Result")


class ReconcileInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: Participant
    key_type: KeyType
    trigger: str = "manual"  # who asked: manual, cli, schedule
    divergence_threshold: int = Field(100, ge=0)  # above it (DICT-only + local-only CIDs), an operator approves
    max_rounds: int = Field(3, ge=1)  # repair-and-verify rounds before the run fails
    max_files: int = Field(3, ge=1)  # files per round, when one ends ERROR/UNAVAILABLE or does not match its digest
    file_deadline: timedelta = timedelta(hours=6)  # from the request to AVAILABLE
    # The file's status, from 5 s after the request, backing off to once a minute: BCB's advice, and 10 a
    # minute per participant is DICT's limit for this call (five pairs' reconciliations at once stay within).
    poll_initial: timedelta = timedelta(seconds=5)
    poll_max: timedelta = timedelta(minutes=1)
    approval_reminder: timedelta = timedelta(hours=4)
    approval_timeout: timedelta = timedelta(days=3)  # then NEEDS_ATTENTION; the 36 h alert fires anyway
    repair_batch: int = Field(500, ge=1, le=10_000)
    # How soon a crashed worker's streaming or repair is noticed and retried (on another worker).
    activity_heartbeat: timedelta = timedelta(seconds=30)
    # How long a change may be in flight (core's event to the local set, DICT's change to its log): a
    # difference is divergence only once it has lasted this long with no change of DICT's to the CID.
    grace: timedelta = timedelta(minutes=2)
    # Looks at the diff, a grace apart: a CID is divergence when two in a row find it so (so at least 2);
    # what DICT keeps changing past the last waits for a next round.
    settle_passes: int = Field(3, ge=2)
    # A proof while the pair changes (activities/proof.py): the local VSync with the CIDs DICT's log changed
    # in the last `proof_window` taken as DICT has them, sent to VerifySync; tried `proof_tries` times,
    # `proof_spacing` apart (DICT allows 10 VerifySync a minute per participant), while changes are in flight.
    proof_window: timedelta = timedelta(seconds=20)
    log_settle: timedelta = timedelta(seconds=5)  # DICT's log is read up to this long ago (it shows events late)
    proof_tries: int = Field(3, ge=1)
    proof_spacing: timedelta = timedelta(seconds=7)
    formal_tries: int = Field(5, ge=0)  # after a proof by DICT's log, tries for a formal OK (0: none)
    # Looks, a grace apart, at the CIDs a proof took as in flight before one still missing is divergence
    # and the proof is withdrawn: 10 minutes in all by default. Longer than a stall of cidsync's own ingestion
    # (a role restarting waits up to 5 minutes for Temporal and Redis; a broker restart redelivers late), so
    # a busy pair is not failed for changes that were only slow.
    landing_looks: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _positive_durations(self) -> ReconcileInput:
        require_positive(
            self,
            (
                "file_deadline",
                "poll_initial",
                "poll_max",
                "approval_reminder",
                "approval_timeout",
                "activity_heartbeat",
                "grace",
                "proof_window",
                "proof_spacing",
            ),
        )
        if self.log_settle >= self.proof_window:
            raise ValueError("log_settle must be shorter than proof_window")
        return self


DROP_SCRATCH = "drop the run's scratch keys"


class ReconcileResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow_id: str
    participant: str
    key_type: KeyType
    outcome: Outcome
    added: int
    removed: int
    skipped: int
    vanished: int
    verifications: int
    files: int
    rounds: int
    reason: str = ""
    in_flight: int = 0  # CIDs the diffs found that were changes on their way, not divergence
    divergence: int = 0  # CIDs the diffs confirmed (DICT-only plus local-only), over every round
    proof: str = ""  # how the last verification proved the pair: formal (VerifySync OK), log, or empty
    # An operator's answer to a repair above the threshold: approved, rejected, timed out; empty if none asked.
    decision: str = ""
    operator: str = ""
    decision_reason: str = ""


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    operator: str = ""
    reason: str = ""


class Progress(BaseModel):
    """What the `progress` query returns: where the run is, in counts."""

    phase: str = "starting"
    round: int = 0
    verifications: int = 0
    files: int = 0
    file_id: str = ""
    file_status: str = ""
    file_cids: int = 0
    dict_only: int = 0  # the round's divergence: confirmed, once the changes in flight have landed
    local_only: int = 0
    events: int = 0  # DICT's log events applied to the file since its snapshot
    in_flight: int = 0  # the diff's CIDs that were changes on their way (not divergence)
    recent: int = 0  # the diff's CIDs DICT kept changing: left for a next round
    divergence: int = 0  # confirmed DICT-only plus local-only CIDs, over every round
    proof: str = ""  # formal | log: how the last verification proved the pair
    withdrawn: int = 0  # proofs whose CIDs taken as in flight did not land in time (divergence at the log's end)
    added: int = 0
    removed: int = 0
    skipped: int = 0
    vanished: int = 0
    awaiting_approval: bool = False
    reminders: int = 0
    decision: str = ""
    retry_after_until: datetime | None = None


class _GiveUp(Exception):
    """The run cannot finish its reconciliation: it ends FAILED with this reason."""


@workflow.defn(versioning_behavior=LONG_WAIT)
class ReconcileVSync:
    def __init__(self) -> None:
        self._progress = Progress()
        self._decision: tuple[bool, Decision] | None = None
        self._approved = False
        self._answer = ("", "", "")  # (approved|rejected|timed out, operator, reason) of the last question
        self._found_nothing = False  # the last round's anchored diff confirmed no divergence

    @workflow.query(description="where the run is: phase, round, file, divergence and repair counts")
    def progress(self) -> Progress:
        return self._progress

    @workflow.update(description="approve the pending repair (above the divergence threshold); operator and reason")
    def approve(self, decision: Decision) -> str:
        self._decision = (True, decision)
        return "approved: the repair goes on"

    @workflow.update(description="reject the pending repair: the run ends NEEDS_ATTENTION; operator and reason")
    def reject(self, decision: Decision) -> str:
        self._decision = (False, decision)
        return "rejected: the run ends as NEEDS_ATTENTION"

    @approve.validator
    def _validate_approve(self, decision: Decision) -> None:
        self._pending()

    @reject.validator
    def _validate_reject(self, decision: Decision) -> None:
        self._pending()

    def _pending(self) -> None:
        if not self._progress.awaiting_approval or self._decision is not None:
            raise ValueError(f"no approval is pending (phase: {self._progress.phase})")

    def _phase(self, phase: str, details: str) -> None:
        changed = phase != self._progress.phase
        self._progress.phase = phase
        workflow.set_current_details(f"round {self._progress.round}, {phase}: {details}")
        # Searchable: `CidPhase="awaiting approval"` lists the runs an operator must answer. Gated: runs
        # started by the code before it replay without these commands (tests/workflows/test_replay.py).
        if changed and workflow.patched(PHASE_SEARCH_ATTRIBUTE):
            workflow.upsert_search_attributes([PHASE.value_set(phase)])

    @workflow.run
    async def run(self, input: ReconcileInput) -> ReconcileResult:
        self._input = input
        self._pair = PairRef(participant=input.participant, key_type=input.key_type)
        started = workflow.now()
        reason = ""
        cancelled = False
        try:
            outcome = await self._reconcile()
        except _GiveUp as give_up:
            outcome, reason = Outcome.FAILED, str(give_up)
        except ActivityError as error:
            if isinstance(error.cause, CancelledError) and workflow.patched(CANCEL_DURING_ACTIVITY):
                # Cancelled while an activity ran: the activity is cancelled with the run and reaches the
                # workflow as its failure. The operator asked for a cancel; that is how the run ends.
                outcome, reason, cancelled = Outcome.FAILED, "cancelled", True
            else:
                outcome, reason = Outcome.FAILED, f"{error.activity_type} failed: {error.cause or error}"
        except asyncio.CancelledError:
            # Cancelled (`temporal workflow cancel`): report it to core like any other end, then end as
            # Cancelled. Repairs already made were published by the round's own clean-up.
            outcome, reason, cancelled = Outcome.FAILED, "cancelled", True
        # Not in a `finally`: that would also run when the worker evicts the run from its cache (and on
        # cancellation), where no activity may be scheduled. A watch left behind expires by its TTL.
        await self._store(StoreActivities.end_watch, self._pair, "stop watching the pair's events")
        if outcome is Outcome.NEEDS_ATTENTION:
            reason = self._progress.decision
        result = self._result(outcome, reason)
        workflow.upsert_search_attributes([OUTCOME.value_set(outcome.value)])
        self._count(result)
        await self._notice(
            ReconciliationCompleted(
                event_id=event_id(workflow.info().workflow_id, workflow.info().run_id, "completed"),
                occurred_at=workflow.now(),
                participant=input.participant,
                key_type=input.key_type,
                reconciliation_id=workflow.info().workflow_id,
                trigger=input.trigger,
                outcome=outcome,
                added=result.added,
                removed=result.removed,
                skipped=result.skipped,
                verifications=result.verifications,
                files=result.files,
                started_at=started,
                duration_seconds=(workflow.now() - started).total_seconds(),
                reason=reason,
                decision=result.decision,
                operator=result.operator,
                decision_reason=result.decision_reason,
            )
        )
        self._phase("done", f"{outcome.value}{': ' + reason if reason else ''}")
        if cancelled:
            raise asyncio.CancelledError()
        if outcome is Outcome.FAILED:
            # Fail loudly: the run shows as Failed in the UI and to `temporal workflow list`, with the
            # result in the error's details for `cidsync reconcile --wait`.
            workflow.logger.error("reconciliation of %s %s FAILED: %s", input.participant, input.key_type, reason)
            raise ApplicationError(
                f"reconciliation FAILED: {reason}",
                result.model_dump(mode="json"),
                type=RECONCILIATION_FAILED,
                non_retryable=True,
            )
        return result

    def _count(self, result: ReconcileResult) -> None:
        """Outcomes and repairs as metrics; the SDK records them once, never again on replay."""
        meter = workflow.metric_meter()
        pair = {"participant": result.participant, "key_type": result.key_type.value}
        meter.create_counter("cidsync_reconciliations", "reconciliations ended, by pair and outcome").add(
            1, {**pair, "outcome": result.outcome.value}
        )
        repairs = meter.create_counter("cidsync_repairs", "CIDs repaired in the local set, by pair and kind")
        for kind, count in (("added", result.added), ("removed", result.removed)):
            if count:
                repairs.add(count, {**pair, "kind": kind})

    def _result(self, outcome: Outcome, reason: str) -> ReconcileResult:
        p = self._progress
        return ReconcileResult(
            workflow_id=workflow.info().workflow_id,
            participant=self._input.participant,
            key_type=self._input.key_type,
            outcome=outcome,
            added=p.added,
            removed=p.removed,
            skipped=p.skipped,
            vanished=p.vanished,
            verifications=p.verifications,
            files=p.files,
            rounds=p.round,
            reason=reason,
            in_flight=p.in_flight,
            divergence=p.divergence,
            proof=p.proof,
            decision=self._answer[0],
            operator=self._answer[1],
            decision_reason=self._answer[2],
        )

    async def _reconcile(self) -> Outcome:
        input = self._input
        for round_ in range(input.max_rounds + 1):
            self._progress.round = round_
            if await self._verify():
                if round_ == 0:
                    return Outcome.OK
                # A busy pair may need a file before its proof, and the file then holds no divergence: nothing
                # was repaired, so the outcome is OK (REPAIRED told operators of repairs that never happened).
                # Gated: a run recorded before the change replays its REPAIRED.
                repaired = self._progress.added or self._progress.removed
                if not repaired and workflow.patched("outcome-ok-when-nothing-repaired"):
                    return Outcome.OK
                return Outcome.REPAIRED
            if round_ == input.max_rounds:
                raise _GiveUp(f"DICT still answers NOK after {input.max_rounds} repair rounds")
            if self._found_nothing:
                # The last file, rolled forward and settled, held no divergence, and still no proof came: the
                # pair changes faster than DICT's log shows it. Another file would find nothing either.
                raise _GiveUp("no proof while the pair changes, and the last CID file found no divergence")
            scratch = Scratch(
                participant=input.participant, key_type=input.key_type, run_id=f"{workflow.info().run_id}-{round_}"
            )
            try:
                repaired = await self._repair_round(scratch)
            except (Exception, asyncio.CancelledError):  # a cancelled run cleans up too (never on eviction)
                # Repairs made before the failure are in the store: their notifications must still reach
                # core before the scratch keys (the outbox among them) go.
                await self._publish_outbox(scratch)
                await self._store(
                    CIDFileActivities.drop_scratch, scratch, "drop the run's scratch keys"
                )  # scratch keys also carry a TTL
                raise
            await self._store(CIDFileActivities.drop_scratch, scratch, DROP_SCRATCH)
            if not repaired:
                return Outcome.NEEDS_ATTENTION
        raise AssertionError("unreachable")

    async def _verify(self) -> bool:
        if workflow.patched(PROOF_WHILE_CHANGING):
            return await self._prove()
        return await self._verify_local()

    async def _prove(self) -> bool:
        """Proved by DICT (VerifySync OK of the predicted VSync) or by its log (its verifier matched): True.
        Tried again only while changes are in flight or DICT's rate limit refused the call: a quiet pair's
        NOK is a NOK at once."""
        input, p = self._input, self._progress
        request = ProveInput(
            participant=input.participant,
            key_type=input.key_type,
            window=input.proof_window,
            settle=input.log_settle,
            not_before=workflow.now(),
        )
        for attempt in range(input.proof_tries):
            self._phase("verifying", f"the local VSync, with what DICT's log shows in flight (try {attempt + 1})")
            proof = await self._try_proof(
                request, "VerifySync of the local VSync, in-flight CIDs as DICT's log has them"
            )
            self._phase("verified", f"{proof.kind} ({proof.in_flight} CIDs in flight)")
            landed = proof.kind != "none" and await self._landed(proof)
            await self._record_proof(proof, landed)
            if landed:
                p.proof = proof.kind
                if proof.kind == "log" and workflow.patched(FORMAL_AFTER_LOG):
                    await self._pursue_formal(request)
                return True
            if proof.kind != "none":
                return False  # withdrawn: what it took as in flight did not land in time, so it is divergence
            if proof.formal_ok is False and not proof.in_flight and not proof.changes:
                return False  # nothing was in flight and the pair was quiet: a real NOK
            if attempt + 1 < input.proof_tries:
                wait = max(input.proof_spacing, timedelta(seconds=proof.retry_after))
                await workflow.sleep(wait, summary="the next try of the proof (VerifySync: 10 a minute)")
        return False

    async def _try_proof(self, request: ProveInput, summary: str) -> Proof:
        proof: Proof = await workflow.execute_activity_method(
            ProofActivities.prove_sync,
            request,
            start_to_close_timeout=BRIDGE_CALL,
            schedule_to_close_timeout=BRIDGE_GIVE_UP,
            retry_policy=BRIDGE_RETRY,
            summary=summary,
        )
        if proof.formal_ok is not None:
            self._progress.verifications += 1
        return proof

    async def _pursue_formal(self, request: ProveInput) -> None:
        """The pair is proved by DICT's log; DICT's 36-hour rule counts formal OKs only, so a few more tries
        (`formal_tries`, `proof_spacing` apart, no log read) for one. A NOK now is DICT's answer to a
        prediction a change in flight spoiled, not to the pair: not recorded."""
        input, p = self._input, self._progress
        request, retry_after = request.model_copy(update={"read_log": False}), 0.0
        for attempt in range(input.formal_tries):
            wait = max(input.proof_spacing, timedelta(seconds=retry_after))
            await workflow.sleep(wait, summary="the next try for a formal OK (VerifySync: 10 a minute)")
            self._phase("verifying", f"proved by DICT's log; VerifySync for a formal OK (try {attempt + 1})")
            proof = await self._try_proof(request, "VerifySync of the local VSync, for a formal OK")
            retry_after = proof.retry_after
            if proof.formal_ok:
                await self._record_proof(proof, True)
                p.proof = "formal"
                return

    async def _landed(self, proof: Proof) -> bool:
        """A proof that took CIDs from DICT's log as in flight stands once they have landed: looked at a grace
        later, and again a grace apart while some are still on their way, `landing_looks` times in all."""
        if not proof.taken:
            return True
        input, taken = self._input, proof.taken
        # Gated: a run recorded before the change withdrew its proof at the first look.
        looks = input.landing_looks if workflow.patched(LANDING_PATIENCE) else 1
        for _ in range(looks):
            self._phase("confirming", f"the {len(taken)} CIDs the proof took as in flight: landed?")
            await workflow.sleep(input.grace, summary="time for the CIDs taken as in flight to land")
            missing: list[str] = await workflow.execute_activity_method(
                ProofActivities.confirm_landed,
                ConfirmInput(participant=input.participant, key_type=input.key_type, taken=taken),
                start_to_close_timeout=BRIDGE_CALL,
                schedule_to_close_timeout=BRIDGE_GIVE_UP,
                retry_policy=BRIDGE_RETRY,
                summary=f"did the {len(taken)} CIDs taken as in flight land?",
            )
            if not missing:
                return True
            taken = {cid: taken[cid] for cid in missing}
        self._progress.withdrawn += 1
        workflow.logger.warning(
            "a proof of %s %s is withdrawn: %d CIDs taken as in flight did not land within %s",
            input.participant,
            input.key_type,
            len(taken),
            input.grace * looks,
        )
        return False

    async def _record_proof(self, proof: Proof, landed: bool) -> None:
        """Where the freshness check reads it: DICT's OK, once the proof's in-flight CIDs landed; else a
        log-anchored proof that landed; else DICT's NOK when nothing was in flight. A withdrawn proof, and a
        NOK that met changes in flight, are only logged (runs from before `formal-after-log` recorded
        every NOK)."""
        if not workflow.patched(FORMAL_AFTER_LOG):
            if proof.formal_ok is False or (proof.formal_ok and landed):
                kind, ok = "formal", bool(proof.formal_ok)
            elif proof.log_ok and landed:
                kind, ok = "log", True
            else:
                return
        elif proof.formal_ok and landed:
            kind, ok = "formal", True
        elif proof.log_ok and landed:
            kind, ok = "log", True  # DICT's NOK beside it answered a prediction a change in flight spoiled
        elif proof.formal_ok is False and not proof.in_flight and not proof.changes and not proof.log_ok:
            kind, ok = "formal", False  # nothing in flight, a quiet pair, no proof by the log: the pair's NOK
        else:
            return
        record = VerificationRecord(
            participant=self._input.participant,
            key_type=self._input.key_type,
            ok=ok,
            at=proof.at,
            verification_id=proof.verification_id if kind == "formal" else f"{workflow.info().workflow_id}@log",
            kind=kind,
            vsync=proof.vsync,
            log_point=proof.log_point,
        )
        await self._store(
            StoreActivities.record_verification, record, f"record the proof ({kind}, {'OK' if ok else 'NOK'})"
        )

    async def _verify_local(self) -> bool:
        self._phase("verifying", "local VSync against DICT")
        local = await self._store(StoreActivities.local_vsync, self._pair, "the local VSync and count")
        verification = await workflow.execute_activity_method(
            BridgeActivities.verify_sync,
            VerifyRequest(participant=self._input.participant, key_type=self._input.key_type, vsync=local.vsync),
            start_to_close_timeout=BRIDGE_CALL,
            schedule_to_close_timeout=BRIDGE_GIVE_UP,
            retry_policy=BRIDGE_RETRY,
            summary=f"VerifySync of {local.count} local CIDs",
        )
        self._progress.verifications += 1
        record = VerificationRecord(
            participant=self._input.participant,
            key_type=self._input.key_type,
            ok=verification.ok,
            at=verification.verified_at,
            verification_id=verification.verification_id,
        )
        await self._store(StoreActivities.record_verification, record, "record DICT's answer")
        self._phase("verified", f"{'OK' if verification.ok else 'NOK'} ({local.count} local CIDs)")
        return verification.ok

    async def _repair_round(self, scratch: Scratch) -> bool:
        """One NOK's repair. False: the operator rejected it (or never decided)."""
        input = self._input
        await self._store(
            StoreActivities.begin_watch,
            WatchRequest(**self._pair.model_dump()),
            "watch the pair's events during the repair",
        )
        file = await self._load_file(scratch)
        anchored = workflow.patched(ANCHORED_DIFF)
        if anchored:
            # From the snapshot (or, from a Bridge that does not say when it was taken, the request, which
            # is earlier: events DICT made between the two are in the file already, and apply again
            # harmlessly).
            head = await self._roll(scratch, Cursor(start=file.created_at or file.requested_at))
        self._phase("diffing", "DICT's CIDs against the local set")
        diff: DiffResult = await self._store(CIDFileActivities.diff, scratch, "DICT's CIDs against the local set")
        if anchored and diff.dict_only + diff.local_only:
            diff = await self._settle(scratch, file.created_at or file.requested_at, head)
        self._progress.dict_only, self._progress.local_only = diff.dict_only, diff.local_only
        divergence = diff.dict_only + diff.local_only
        self._progress.divergence += divergence
        self._found_nothing = anchored and divergence == 0
        if divergence > input.divergence_threshold and not self._approved and not await self._approval(diff):
            return False
        for side in (RepairSide.DICT_ONLY, RepairSide.LOCAL_ONLY):
            await self._repair_side(scratch, side, diff.dict_only if side is RepairSide.DICT_ONLY else diff.local_only)
        await self._publish_outbox(scratch)
        return True

    async def _roll(self, scratch: Scratch, cursor: Cursor) -> datetime:
        """DICT's log from `cursor` applied to the file's set, page by page: where the log was read up to."""
        while True:
            self._phase("rolling forward", f"DICT's CID events from {cursor.start.isoformat()}")
            rolled = await workflow.execute_activity_method(
                CIDFileActivities.roll_forward,
                RollInput(scratch=scratch, cursor=cursor),
                start_to_close_timeout=BRIDGE_CALL,
                schedule_to_close_timeout=BRIDGE_GIVE_UP,
                retry_policy=BRIDGE_RETRY,
                summary=f"DICT's CID events from {cursor.start.isoformat()} onto the file",
            )
            self._progress.events += rolled.events
            cursor = rolled.cursor
            if not rolled.has_more:
                return rolled.head

    async def _settle(self, scratch: Scratch, snapshot: datetime, head: datetime) -> DiffResult:
        """The diff judged again once changes in flight have had `grace` to land: what is left is divergence.

        Each look first reads DICT's log again from `grace` before where it was read up to, so an event
        DICT showed late (its log is written asynchronously) is applied too."""
        input, p = self._input, self._progress
        judged = JudgedDiff(dict_only=0, local_only=0, in_flight=0, recent=0)
        for look in range(input.settle_passes):
            self._phase("settling", f"{p.in_flight} in flight so far; waiting {input.grace} for the rest to land")
            await workflow.sleep(input.grace, summary="changes in flight: time for their events to land")
            head = await self._roll(scratch, Cursor(start=max(snapshot, head - input.grace)))
            final = look == input.settle_passes - 1
            judged = await self._store(
                CIDFileActivities.judge,
                JudgeInput(scratch=scratch, cutoff=workflow.now() - input.grace, final=final),
                "each CID of the diff: in flight, recent or divergence",
            )
            p.in_flight += judged.in_flight
            p.recent = judged.recent
            if not judged.recent:
                break
        return DiffResult(dict_only=judged.dict_only, local_only=judged.local_only)

    async def _publish_outbox(self, scratch: Scratch) -> None:
        """Retried without limit: a repair core never hears of would leave its records wrong."""
        self._phase("notifying", "publishing the repaired entries to core-events")
        await publish_outbox(scratch, heartbeat=timedelta(minutes=1))

    async def _load_file(self, scratch: Scratch) -> CIDSetFile:
        """A CID file of DICT, AVAILABLE and streamed into `scratch` with its count and digest checked."""
        input = self._input
        problems = []
        for attempt in range(input.max_files):
            request_id = f"{workflow.info().workflow_id}/{workflow.info().run_id}/{self._progress.round}/{attempt}"
            deadline = workflow.now() + input.file_deadline
            file = await self._poll(await self._create(request_id), deadline)
            if file.status is not FileStatus.AVAILABLE:
                problems.append(f"file {file.file_id} ended {file.status.value}")
                continue
            self._phase("streaming", f"{file.cid_count} CIDs of file {file.file_id} into Redis")
            try:
                await workflow.execute_activity_method(
                    CIDFileActivities.stream_cid_file,
                    StreamFileInput(
                        scratch=scratch, file_id=file.file_id, cid_count=file.cid_count, sha256=file.sha256
                    ),
                    start_to_close_timeout=timedelta(hours=1),
                    heartbeat_timeout=input.activity_heartbeat,
                    retry_policy=STREAM_FILE_RETRY,
                    summary=f"stream the {file.cid_count} CIDs of file {file.file_id} into Redis",
                )
                return file
            except ActivityError as error:
                if not (isinstance(error.cause, ApplicationError) and error.cause.type == CID_FILE_MISMATCH):
                    raise
                problems.append(f"file {file.file_id}: {error.cause.message}")
                await self._store(CIDFileActivities.drop_scratch, scratch, DROP_SCRATCH)
        raise _GiveUp(f"no usable CID file after {input.max_files} requests: {'; '.join(problems)}")

    async def _create(self, request_id: str) -> CIDSetFile:
        self._phase("requesting file", f"CreateCidSetFile (idempotency key {request_id})")
        while True:
            try:
                file: CIDSetFile = await workflow.execute_activity_method(
                    BridgeActivities.create_cid_set_file,
                    CreateFileRequest(
                        participant=self._input.participant, key_type=self._input.key_type, request_id=request_id
                    ),
                    start_to_close_timeout=BRIDGE_CALL,
                    schedule_to_close_timeout=BRIDGE_GIVE_UP,
                    retry_policy=BRIDGE_RETRY,
                    summary=f"CreateCidSetFile (idempotency key {request_id})",
                )
            except ActivityError as error:
                cause = error.cause
                if not (isinstance(cause, ApplicationError) and cause.type == RATE_LIMITED):
                    raise
                # DICT's file quota (40 a day): wait its retry-after on a durable timer, then ask again
                # with the same key (a refused request made no file).
                wait = timedelta(seconds=max(float(cause.details[0]) if cause.details else 60.0, 1.0))
                self._progress.retry_after_until = workflow.now() + wait
                self._phase("rate limited", f"DICT's file quota: asking again at {self._progress.retry_after_until}")
                await workflow.sleep(wait, summary="DICT's file quota: its retry-after")
                self._progress.retry_after_until = None
                continue
            self._progress.files += 1
            self._progress.file_id, self._progress.file_status = file.file_id, file.status.value
            return file

    async def _poll(self, file: CIDSetFile, deadline: datetime) -> CIDSetFile:
        input = self._input
        delay = input.poll_initial
        while not file.status.final:
            if workflow.now() + delay > deadline:
                raise _GiveUp(f"CID file {file.file_id} was not ready within {input.file_deadline}")
            self._phase("waiting for file", f"{file.file_id} is {file.status.value}; next look in {delay}")
            await workflow.sleep(delay, summary=f"until the next look at file {file.file_id}")
            delay = min(delay * 2, input.poll_max)
            file = await workflow.execute_activity_method(
                BridgeActivities.get_cid_set_file,
                FileRef(participant=file.participant, file_id=file.file_id),
                start_to_close_timeout=BRIDGE_CALL,
                schedule_to_close_timeout=BRIDGE_GIVE_UP,
                retry_policy=BRIDGE_RETRY,
                summary=f"status of file {file.file_id}",
            )
            self._progress.file_status = file.status.value
            self._progress.file_cids = file.cid_count
        return file

    async def _approval(self, diff: DiffResult) -> bool:
        input = self._input
        p = self._progress
        p.awaiting_approval = True
        since = workflow.now()
        deadline = since + input.approval_timeout
        summary = (
            f"{diff.dict_only} DICT-only and {diff.local_only} local-only CIDs exceed the threshold of "
            f"{input.divergence_threshold}: `cidsync reconcile approve|reject {workflow.info().workflow_id}`"
        )
        while self._decision is None and (remaining := deadline - workflow.now()) > timedelta(0):
            self._phase(AWAITING_APPROVAL, summary)
            workflow.logger.warning("reconciliation awaits an operator's approval: %s", summary)
            await self._notice(
                ApprovalNeeded(
                    event_id=event_id(workflow.info().run_id, "approval", str(p.reminders)),
                    occurred_at=workflow.now(),
                    participant=input.participant,
                    key_type=input.key_type,
                    reconciliation_id=workflow.info().workflow_id,
                    dict_only=diff.dict_only,
                    local_only=diff.local_only,
                    threshold=input.divergence_threshold,
                    waiting_since=since,
                )
            )
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=min(input.approval_reminder, remaining),
                    timeout_summary="the operator's answer, or the next reminder",
                )
            except TimeoutError:
                if workflow.now() < deadline:
                    p.reminders += 1
        p.awaiting_approval = False
        if self._decision is None:
            p.decision = f"no operator decision within {input.approval_timeout}"
            self._answer = ("timed out", "", "")
            return False
        approved, decision = self._decision
        who = decision.operator or "an operator"
        because = f": {decision.reason}" if decision.reason else ""
        p.decision = f"{'approved' if approved else 'rejected'} by {who}{because}"
        self._answer = ("approved" if approved else "rejected", decision.operator, decision.reason)
        self._approved = approved
        return approved

    async def _repair_side(self, scratch: Scratch, side: RepairSide, total: int) -> None:
        p = self._progress
        remaining = total
        while remaining:
            label = "adding DICT-only CIDs" if side is RepairSide.DICT_ONLY else "removing local-only CIDs"
            self._phase("repairing", f"{label}: {remaining} of {total} left")
            result: RepairResult = await workflow.execute_activity_method(
                RepairActivities.repair_cids,
                RepairInput(
                    scratch=scratch,
                    side=side,
                    reconciliation_id=workflow.info().workflow_id,
                    batch_size=self._input.repair_batch,
                ),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=self._input.activity_heartbeat,
                retry_policy=REPAIR_RETRY,
                summary=f"{label}: up to {self._input.repair_batch} of {remaining}",
            )
            if side is RepairSide.DICT_ONLY:
                p.added += result.repaired
            else:
                p.removed += result.repaired
            p.skipped += result.skipped
            p.vanished += result.vanished
            remaining = result.remaining

    async def _notice(self, notice: ApprovalNeeded | ReconciliationCompleted) -> None:
        await workflow.execute_activity_method(
            CoreEventsPublisher.publish_notice,
            NoticeInput(notice=notice),
            start_to_close_timeout=NOTICE_TIMEOUT,
            retry_policy=NOTICE_RETRY,
            summary=f"notify core: {notice.event_type.value}",
        )

    @staticmethod
    async def _store(method: Callable[[Any, Arg], Awaitable[Result]], arg: Arg, summary: str | None = None) -> Result:
        """A Redis activity: retried without limit (nothing may be lost), like the ingestion's."""
        return await workflow.execute_activity_method(
            method, arg, start_to_close_timeout=STORE_TIMEOUT, retry_policy=STORE_RETRY, summary=summary
        )


async def start_or_join(request: ReconcileInput) -> bool:
    """From another workflow: start the pair's ReconcileVSync under the pair's own id, as a child it
    abandons (the reconciliation outlives it); False when one is running already, which is then joined."""
    try:
        await workflow.start_child_workflow(
            ReconcileVSync.run,
            request,
            id=reconcile_workflow_id(request.participant, request.key_type),
            parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=reconcile_search_attributes(request.participant, request.key_type),
            static_summary=reconcile_summary(request.participant, request.key_type, request.trigger),
        )
    except WorkflowAlreadyStartedError:
        return False
    return True
