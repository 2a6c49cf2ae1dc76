"""FollowCidEvents: continuous verification of one (participant, key type) from DICT's CID event log.

BCB's manual (chapter 9) recommends following `listCidSetEvents` so the local base stays in sync between
the daily verifications. This run does it for one pair, forever, continuing as new every
`polls_per_run` polls (or when Temporal suggests it) with its state carried over:

1. Read one page of the log from the durable cursor (`poll_cid_events`), one call per `poll_interval`
   while the log shows events (every `catch_up_interval` while pages come back full), backing off to
   `idle_interval` while it is quiet. DICT allows 20 calls a minute per participant, shared by its key
   types: the participant's budget (`cidsync.bridge.budget`) keeps all its followers within it, and a
   follower's routine read leaves a reserve to reconciliations and proofs.
2. A CID whose DICT state the local set contradicts is a suspect (`cidsync.follow`). Core changes DICT
   first and publishes after, so a suspect gets `grace` from DICT's change to be resolved by its own
   event; most are.
3. A suspect still contradicted when its grace is over is repaired with the reconciliation's own
   compare-and-set (`repair_suspects`): checked against DICT by entry, refused for a key an event has
   changed meanwhile, with the notification for core written in the same step and published after
   (`publish_outbox`). No CID file is spent.
4. With no suspect pending and the whole log read, the local VSync equal to DICT's (SyncVerifierEnd) is
   a proof of sync: recorded as a verification (what the 36-hour freshness check reads), at most every
   `proof_every`.
5. What this run should not settle alone is handed to ReconcileVSync (started or joined, under the
   pair's reconciliation id): more suspects due at once than `hand_over_above` (the reconciliation asks
   an operator above its threshold; a follower must not bypass that), or VSyncs that differ for
   `unexplained_after` with no suspect to explain it (a local change DICT never saw).

History holds the cursor, counts and the CIDs in dispute, never an entry. A crash loses nothing: the
cursor moves only in history, a page read twice is the same page, and a repair done twice is refused
by its own compare-and-set (the notification's id is derived from the CID and DICT's change time).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import workflow

from workflows.versioning import FOLLOWER

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import StoreActivities
    from activities.follow import MAX_PAGE, FollowActivities, PollInput, PollResult
    from activities.proof import ConfirmInput, Proof, ProofActivities, ProveInput
    from activities.repair import RepairActivities, SuspectRepair, SuspectRepairInput, SuspectRepairResult
    from cidsync import follow
    from cidsync.entry import KeyType, Participant
    from cidsync.follow import Cursor, Suspect
    from cidsync.naming import PHASE
    from cidsync.store.layout import Scratch
    from cidsync.store.models import VerificationRecord
    from workflows.policies import (
        BRIDGE_CALL,
        CATCH_UP,
        FOLLOW_RETRY,
        FOLLOWER_PROOFS,
        FORMAL_PURSUIT,
        STORE_RETRY,
        STORE_TIMEOUT,
        publish_outbox,
        require_positive,
    )
    from workflows.reconcile_vsync import ReconcileInput, start_or_join

OUTBOX_RUN_ID = "follow"  # the follower's outbox: `{cid:<pair>}:recon:follow:outbox`


class FollowStatus(BaseModel):
    """What the `status` query answers (and continue-as-new carries): where the follower is and what it did."""

    participant: str
    key_type: KeyType
    cursor: Cursor
    state: str = "starting"  # catching up | in sync | suspects pending | checking | handed over
    runs: int = 1  # this run and those it continued from
    polls: int = 0
    last_poll_at: datetime | None = None
    behind_seconds: float = 0.0  # how far the cursor is behind DICT's head (0 once a page was the last)
    events: int = 0
    dict_vsync: str = ""  # DICT's VSync at the end of the last page read
    local_vsync: str = ""
    local_count: int = 0
    suspects: dict[str, Suspect] = Field(default_factory=dict)
    # CIDs DICT removed and the local set agreed on, until their grace ends: a creation event arriving late
    # would bring one back locally, with no log event left to explain it (issue: busy pairs, item 5).
    watches: dict[str, Suspect] = Field(default_factory=dict)
    resolved: int = 0  # suspects the local set came to agree with (their events arrived in time)
    added: int = 0  # repairs: CIDs added locally
    removed: int = 0  # ... and removed locally
    skipped: int = 0  # repairs refused because an event changed the key meanwhile (tried again later)
    vanished: int = 0  # due suspects DICT and the local set agreed on after all
    inconsistent: int = 0  # DICT answered an entry that does not hash to the CID: left alone, logged
    inconsistent_pages: int = 0  # pages whose CIDs do not lead from their start verifier to their end one
    hand_overs: int = 0
    last_hand_over: str = ""
    mismatch_since: datetime | None = None  # VSyncs differ with no suspect since then
    in_sync_since: datetime | None = None
    last_proof_at: datetime | None = None
    last_proof_kind: str = ""  # formal (VerifySync OK) or log (DICT's verifier matched)
    last_formal_at: datetime | None = None  # the last VerifySync OK (what DICT's 36-hour rule counts)
    proof_not_before: datetime | None = None  # DICT's rate limit asked the proofs to wait until then
    proof_tries: int = 0  # calls of prove_sync
    pending_proof: Proof | None = None  # a proof waiting for what it took as in flight to land
    withdrawn: int = 0  # proofs whose CIDs taken as in flight never landed

    @property
    def pending(self) -> int:
        return len(self.suspects)


class FollowInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: Participant
    key_type: KeyType
    grace: timedelta = timedelta(minutes=2)  # from DICT's change, for core's event to arrive
    # Between calls while the log shows events: 15 s is 4 a minute, so five busy key types of one participant
    # stay within DICT's 20 a minute for this call. While a page comes back full, every `catch_up_interval`:
    # a pair at 20 changes a second needs 6 pages a minute. The participant's budget (cidsync.bridge.budget)
    # holds all of its followers within DICT's limit, so a busy pair takes what the quiet ones leave.
    poll_interval: timedelta = timedelta(seconds=15)
    catch_up_interval: timedelta = timedelta(seconds=3)
    idle_interval: timedelta = timedelta(seconds=60)  # the longest wait while the log is quiet
    page_size: int = Field(MAX_PAGE, ge=1, le=MAX_PAGE)
    hand_over_above: int = Field(100, ge=0)  # suspects due at once above this go to ReconcileVSync
    max_pending: int = Field(2_000, ge=1)  # suspects in grace above this go to ReconcileVSync at once
    unexplained_after: timedelta = timedelta(minutes=10)
    reconcile_threshold: int = Field(100, ge=0)  # the handed-over reconciliation's approval threshold
    proof_every: timedelta = timedelta(minutes=5)  # a proof of some kind at least this often, busy or not
    log_settle: timedelta = timedelta(seconds=5)  # DICT's log read up to this long ago (it shows events late)
    max_watches: int = Field(5_000, ge=0)  # agreeing removals watched through their grace, the newest kept
    polls_per_run: int = Field(500, ge=1)  # then continue as new
    # How soon a crashed worker's repair or publication is noticed and retried (on another worker).
    activity_heartbeat: timedelta = timedelta(seconds=30)
    start_at: datetime | None = None  # where the log is first read; default: when the first run was started
    status: FollowStatus | None = None  # carried over continue-as-new

    @model_validator(mode="after")
    def _positive_durations(self) -> FollowInput:
        require_positive(
            self,
            (
                "grace",
                "poll_interval",
                "catch_up_interval",
                "idle_interval",
                "unexplained_after",
                "proof_every",
                "activity_heartbeat",
            ),
        )
        if self.idle_interval < self.poll_interval:
            raise ValueError("idle_interval must be at least poll_interval")
        return self


# The type name followers run under (their continue-as-new chains and recorded histories carry it), in
# Temporal's spelling from before class names spelled CID one way: it stays.
WORKFLOW_TYPE = "FollowCidEvents"


@workflow.defn(name=WORKFLOW_TYPE, versioning_behavior=FOLLOWER)
class FollowCIDEvents:
    def __init__(self) -> None:
        self._status: FollowStatus | None = None
        self._poke = False
        self._repaired_now = False
        self._phase = ""
        # The last judgement found the VSyncs differing with no suspect (for the gauge: it stays set through
        # a hand-over, until a judgement finds the pair in sync or explained).
        self._unexplained = False

    @workflow.query(description="the follower's cursor, lag, suspects, repairs and last proof of sync")
    def status(self) -> FollowStatus:
        if self._status is None:
            raise ValueError("the follower has not started yet")
        return self._status

    @workflow.signal(description="read the log now instead of at the next poll")
    def poke(self) -> None:
        self._poke = True

    @workflow.run
    async def run(self, input: FollowInput) -> None:
        self._input = input
        if input.status is None:
            status = FollowStatus(
                participant=input.participant,
                key_type=input.key_type,
                # From when the run was started, not from its first task: a change DICT makes between
                # the two (a busy worker) is read too.
                cursor=Cursor(start=input.start_at or workflow.info().workflow_start_time),
            )
        else:
            status = input.status.model_copy(update={"runs": input.status.runs + 1})
        self._status = status
        wait = input.poll_interval
        for _ in range(input.polls_per_run):
            self._poke = self._repaired_now = False
            result = await self._poll()
            if len(status.suspects) > input.max_pending:
                status.suspects.clear()
                await self._hand_over("too_many_suspects", f"more than {input.max_pending} suspects at once")
            await self._repair_due()
            if not result.has_more:
                await self._judge(result)
            self._report()
            wait = self._next_wait(result, wait)
            with contextlib.suppress(TimeoutError):  # the usual end of the wait: no poke came
                await workflow.wait_condition(lambda: self._poke, timeout=wait, timeout_summary="until the next poll")
            # A run ends early when its history grows long, or when a new version of the workers became
            # the task queue's target: the run is pinned to its build, the next one starts on the new.
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.is_target_worker_deployment_version_changed():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            input.model_copy(update={"status": self._status, "start_at": None}),
            initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
        )

    @property
    def _s(self) -> FollowStatus:
        assert self._status is not None
        return self._status

    async def _poll(self) -> PollResult:
        s, input = self._s, self._input
        result: PollResult = await workflow.execute_activity_method(
            FollowActivities.poll_cid_events,
            PollInput(
                participant=input.participant,
                key_type=input.key_type,
                cursor=s.cursor,
                suspects=[x.state for x in (*s.suspects.values(), *s.watches.values())],
                limit=input.page_size,
                settle=input.log_settle,
            ),
            start_to_close_timeout=BRIDGE_CALL,
            retry_policy=FOLLOW_RETRY,
            summary=f"DICT's CID events from {s.cursor.start.isoformat()}",
        )
        merged = follow.merge(s.suspects, result.observations, input.grace)
        s.suspects = merged.suspects
        s.watches = follow.watch(
            s.watches, s.suspects, result.observations, input.grace, workflow.now(), input.max_watches
        )
        s.resolved += merged.resolved
        s.cursor = result.cursor
        s.polls += 1
        s.events += result.events
        s.last_poll_at = workflow.now()
        s.behind_seconds = max((workflow.now() - result.polled_at).total_seconds(), 0.0) if result.has_more else 0.0
        if result.dict_vsync:  # empty when nothing of the log was settled yet to be read
            s.dict_vsync, s.local_vsync, s.local_count = result.dict_vsync, result.local_vsync, result.local_count
        s.inconsistent_pages += not result.consistent
        if result.has_more:
            s.state = "catching up"
        elif s.suspects:
            # Said at once, not at the next judgement: a suspect due already (read after its grace) is
            # repaired before that, and a reader must never see "in sync" beside a repair in progress.
            s.state = "suspects pending"
        self._count("cidsync_follower_events", "DICT CID events read by the follower", result.events)
        return result

    async def _repair_due(self) -> None:
        s, input = self._s, self._input
        ready = follow.due(s.suspects, workflow.now())
        if not ready:
            return
        if len(ready) > input.hand_over_above:
            for suspect in ready:
                del s.suspects[suspect.cid]
            await self._hand_over("suspects_due", f"{len(ready)} suspects due at once (above {input.hand_over_above})")
            return
        scratch = Scratch(participant=input.participant, key_type=input.key_type, run_id=OUTBOX_RUN_ID)
        workflow_id = workflow.info().workflow_id
        result: SuspectRepairResult = await workflow.execute_activity_method(
            RepairActivities.repair_suspects,
            SuspectRepairInput(
                scratch=scratch,
                suspects=[
                    SuspectRepair(cid=x.cid, in_dict=x.in_dict, repair_id=f"{workflow_id}@{x.changed_at.isoformat()}")
                    for x in ready
                ],
            ),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=input.activity_heartbeat,
            retry_policy=FOLLOW_RETRY,
            summary=f"repair {len(ready)} CIDs DICT's log contradicts",
        )
        later = workflow.now() + input.grace
        for value in result.repaired:
            if s.suspects.pop(value).in_dict:
                s.added += 1
                self._count("cidsync_follower_repairs", "CIDs the follower repaired, by kind", 1, kind="added")
            else:
                s.removed += 1
                self._count("cidsync_follower_repairs", "CIDs the follower repaired, by kind", 1, kind="removed")
        for value in result.skipped:
            s.suspects[value] = s.suspects[value].model_copy(update={"due": later})
        for value in [*result.vanished, *result.inconsistent]:
            del s.suspects[value]
        s.skipped += len(result.skipped)
        s.vanished += len(result.vanished)
        s.inconsistent += len(result.inconsistent)
        if result.inconsistent:
            workflow.logger.error(
                "DICT answered entries that do not hash to their CIDs, left alone: %s", ", ".join(result.inconsistent)
            )
        if result.repaired:
            self._repaired_now = True
            await publish_outbox(scratch, heartbeat=input.activity_heartbeat)

    async def _judge(self, result: PollResult) -> None:
        """The whole log is read: in sync, still checking, or a divergence nothing explains."""
        s, input, now = self._s, self._input, workflow.now()
        self._unexplained = False
        if s.suspects:
            s.state, s.mismatch_since, s.in_sync_since = "suspects pending", None, None
            # A busy pair always has some: it is proved all the same, the suspects' CIDs taken as DICT has them.
            if workflow.patched(FOLLOWER_PROOFS):
                await self._prove_while_changing()
            return
        if result.local_vsync == result.dict_vsync and result.consistent:
            s.state, s.mismatch_since = "in sync", None
            s.in_sync_since = s.in_sync_since or now
            if workflow.patched(FOLLOWER_PROOFS):
                await self._prove_while_changing()  # a formal proof, DICT asked (its verifier alone: log)
            elif s.last_proof_at is None or now - s.last_proof_at >= input.proof_every:
                await self._prove(result)
            return
        s.state, s.in_sync_since = "checking", None
        s.mismatch_since = s.mismatch_since or now
        self._unexplained = True
        if now - s.mismatch_since >= input.unexplained_after:
            s.mismatch_since = None
            await self._hand_over(
                "unexplained",
                f"the local VSync has differed from DICT's for {input.unexplained_after} with no suspect to explain it",
            )

    async def _prove_while_changing(self) -> None:
        """Every `proof_every`, the proof ReconcileVSync makes (activities/proof.py): formal when DICT
        agrees with the local VSync and what its log shows in flight; counted once what it took as in flight
        has landed, at a later poll (never blocking this one)."""
        s, input, now = self._s, self._input, workflow.now()
        pending = s.pending_proof
        if pending is not None:
            if now < pending.at + input.grace:
                return
            s.pending_proof = None
            missing: list[str] = await workflow.execute_activity_method(
                ProofActivities.confirm_landed,
                ConfirmInput(participant=input.participant, key_type=input.key_type, taken=pending.taken),
                start_to_close_timeout=BRIDGE_CALL,
                retry_policy=FOLLOW_RETRY,
                summary=f"did the {len(pending.taken)} CIDs the proof took as in flight land?",
            )
            if missing:
                s.withdrawn += 1
            else:
                await self._record(pending)
            return

        def due(last: datetime | None) -> bool:
            return last is None or now - last >= input.proof_every

        if workflow.patched(FORMAL_PURSUIT):
            # A log proof is one of any kind; DICT's 36-hour rule counts formal ones only, so those are tried
            # for at every poll until one comes (VerifySync within DICT's limit: its retry-after is kept).
            if s.proof_not_before is not None and now < s.proof_not_before:
                return  # DICT's limit (or the participant's share of it) asked to wait
            formal = due(s.last_formal_at)
            if not formal and not due(s.last_proof_at):
                return
            settle = input.log_settle
            # Between proofs of any kind, a try for the formal one spends no read of DICT's log.
            request = ProveInput(
                participant=input.participant,
                key_type=input.key_type,
                formal=formal,
                read_log=due(s.last_proof_at),
                window=max(timedelta(seconds=10), 3 * settle),
                settle=settle,
                not_before=now - input.poll_interval - settle,
            )
        else:
            if not due(s.last_proof_at):
                return
            request = ProveInput(
                participant=input.participant, key_type=input.key_type, not_before=now - input.poll_interval
            )
        s.proof_tries += 1
        proof: Proof = await workflow.execute_activity_method(
            ProofActivities.prove_sync,
            request,
            start_to_close_timeout=BRIDGE_CALL,
            retry_policy=FOLLOW_RETRY,
            summary="VerifySync of the local VSync, in-flight CIDs as DICT's log has them",
        )
        if proof.retry_after:
            s.proof_not_before = now + timedelta(seconds=proof.retry_after)
        if proof.kind == "none" or (proof.kind == "log" and not due(s.last_proof_at)):
            return
        if proof.taken:
            s.pending_proof = proof
        else:
            await self._record(proof)

    async def _record(self, proof: Proof) -> None:
        s = self._s
        record = VerificationRecord(
            participant=s.participant,
            key_type=s.key_type,
            ok=True,
            at=proof.at,
            verification_id=proof.verification_id or f"{workflow.info().workflow_id}@{proof.log_point.isoformat()}",
            kind="formal" if proof.formal_ok else "log",
            vsync=proof.vsync,
            log_point=proof.log_point,
        )
        await workflow.execute_activity_method(
            StoreActivities.record_verification,
            record,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary=f"record the proof of sync ({record.kind})",
        )
        s.last_proof_at, s.last_proof_kind = record.at, record.kind
        if record.kind == "formal":
            s.last_formal_at = record.at

    async def _prove(self, result: PollResult) -> None:
        s = self._s
        record = VerificationRecord(
            participant=s.participant,
            key_type=s.key_type,
            ok=True,
            at=workflow.now(),
            verification_id=f"{workflow.info().workflow_id}@{result.polled_at.isoformat()}",
        )
        await workflow.execute_activity_method(
            StoreActivities.record_verification,
            record,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary="record the proof of sync (local VSync = DICT's SyncVerifierEnd)",
        )
        s.last_proof_at = record.at

    async def _hand_over(self, kind: str, reason: str) -> None:
        s, input = self._s, self._input
        self._count("cidsync_follower_hand_overs", "pairs handed to ReconcileVSync, by reason", 1, reason=kind)
        request = ReconcileInput(
            participant=input.participant,
            key_type=input.key_type,
            trigger="follower",
            divergence_threshold=input.reconcile_threshold,
            grace=input.grace,  # what the follower allows a change in flight, the reconciliation allows too
        )
        joined = "" if await start_or_join(request) else " (joined the one running)"
        s.hand_overs += 1
        s.last_hand_over = f"{workflow.now().isoformat()}: {reason}{joined}"
        s.state = "handed over"
        workflow.logger.warning("handed %s %s to ReconcileVSync: %s", input.participant, input.key_type, reason)

    def _next_wait(self, result: PollResult, previous: timedelta) -> timedelta:
        """Busy log: every `poll_interval`, or `catch_up_interval` after a full page. Quiet: twice as long
        each time, up to `idle_interval`. A suspect falling due sooner brings the next poll forward, never
        closer than `poll_interval`."""
        input = self._input
        busy = result.has_more or result.events or self._repaired_now  # after a repair: soon, to prove it
        wait = input.poll_interval if busy else min(previous * 2, input.idle_interval)
        if result.has_more and workflow.patched(CATCH_UP):
            wait = min(input.catch_up_interval, input.poll_interval)
        if self._s.suspects:
            first = min(x.due for x in self._s.suspects.values())
            wait = min(wait, max(first - workflow.now(), input.poll_interval))
        return wait

    def _report(self) -> None:
        s = self._s
        details = (
            f"{s.state}: cursor at {s.cursor.start.isoformat()}, {s.pending} suspects, "
            f"{s.added} added and {s.removed} removed by repair, {s.events} events read"
        )
        workflow.set_current_details(details)
        if self._phase != s.state:
            self._phase = s.state
            workflow.upsert_search_attributes([PHASE.value_set(s.state)])
        # Gauges live in the worker that ran this task, and keep their last value there once another replica
        # takes the run over: each is reported beside the point of DICT's log read up to, which only moves
        # forward, so a rule takes the values of the replica with the newest one
        # (deploy/prometheus/cidsync-rules.yml, `cidsync:follower_*`), and the lag is time() minus it.
        if s.last_poll_at is None:
            return
        meter = workflow.metric_meter()
        labels = {"participant": s.participant, "key_type": s.key_type.value}
        read_up_to = s.last_poll_at.timestamp() - s.behind_seconds
        meter.create_gauge_float(
            "cidsync_follower_read_up_to_timestamp_seconds", "the point of DICT's log the follower has read up to"
        ).set(read_up_to, labels)
        meter.create_gauge("cidsync_follower_suspects", "CIDs DICT and the local set disagree on, in grace").set(
            s.pending, labels
        )
        meter.create_gauge(
            "cidsync_follower_unexplained_mismatch", "1 while the VSyncs differ with no suspect to explain it"
        ).set(int(self._unexplained), labels)

    def _count(self, name: str, description: str, value: int, **labels: str) -> None:
        if value:
            s = self._s
            workflow.metric_meter().create_counter(name, description).add(
                value, {"participant": s.participant, "key_type": s.key_type.value, **labels}
            )
