"""ReconcileVSync with recorded fake activities, on the time-skipping server: the durable waits of a
reconciliation (file polling, DICT's retry-after, the operator's approval and its reminders) and its
give-up path, in simulated hours and days.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.bridge import CreateFileRequest, FileRef, VerifyRequest
from activities.cid_file import JudgeInput, RollInput, RollResult, StreamFileInput, StreamFileResult
from activities.cid_store import PairsRequest, WatchRequest
from activities.core_events import NoticeInput
from activities.proof import ConfirmInput, Proof, ProveInput
from activities.repair import RepairInput, RepairResult
from cidsync.bridge.models import CIDSetFile, FileStatus, Verification
from cidsync.core_events import CoreEventType, Outcome, ReconciliationCompleted
from cidsync.entry import KeyType, PairRef
from cidsync.naming import OUTCOME, PHASE, reconcile_search_attributes
from cidsync.store.layout import RepairSide, Scratch
from cidsync.store.models import DiffResult, JudgedDiff, LocalVSync, PairVerification, VerificationRecord
from tests.helpers.workers import current_worker
from workflows.reconcile_vsync import Decision, Progress, ReconcileInput, ReconcileResult, ReconcileVSync

PARTICIPANT = "12345678"


@dataclass
class FakeDict:
    """DICT and the stores, scripted: verification answers, file statuses, rate limits, diff sizes."""

    verdicts: list[bool]  # one per verification; the last repeats
    statuses: list[FileStatus] = field(default_factory=lambda: [FileStatus.AVAILABLE])  # per poll; last repeats
    file_outcomes: list[FileStatus] = field(default_factory=list)  # final status per file (default AVAILABLE)
    rate_limited: list[float] = field(default_factory=list)  # retry-afters answered to the first creates
    dict_only: int = 3
    local_only: int = 2
    creates: list[tuple[str, datetime]] = field(default_factory=list)
    polls: list[datetime] = field(default_factory=list)
    repairs: list[RepairSide] = field(default_factory=list)
    rolls: list[datetime] = field(default_factory=list)  # where each read of DICT's log started
    notices: list[NoticeInput] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    outboxes: list[str] = field(default_factory=list)
    verified: list[VerificationRecord] = field(default_factory=list)
    # The first proof takes these CIDs as in flight; each look of confirm_landed finds the next entry of
    # `unlanded` still missing (the last repeats), and is recorded in `looks` with what it was asked.
    in_flight: dict[str, bool] = field(default_factory=dict)
    unlanded: list[set[str]] = field(default_factory=lambda: [set()])
    looks: list[tuple[datetime, set[str]]] = field(default_factory=list)
    # With `hold_first_poll`, the first file poll sets `polling` and waits for `release`, so a test can act
    # while an activity runs.
    hold_first_poll: bool = False
    polling: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def activities(self) -> list[Callable[..., Any]]:
        files: dict[str, int] = {}

        @activity.defn(name="local_vsync")
        async def local_vsync(pair: PairRef) -> LocalVSync:
            return LocalVSync(vsync="0" * 64, count=10)

        @activity.defn(name="verify_sync")
        async def verify_sync(request: VerifyRequest) -> Verification:
            ok = self.verdicts[min(len(self.verified), len(self.verdicts) - 1)]
            return Verification(verification_id=str(uuid.uuid4()), ok=ok, verified_at=datetime.now(UTC))

        @activity.defn(name="prove_sync")
        async def prove_sync(request: ProveInput) -> Proof:
            # As on a quiet pair (nothing in flight, DICT's answer decides), but for `in_flight` at first.
            ok = self.verdicts[min(len(self.verified), len(self.verdicts) - 1)]
            now = datetime.now(UTC)
            taken = self.in_flight if not self.looks else {}
            return Proof(
                participant=request.participant,
                key_type=request.key_type,
                at=now,
                vsync="0" * 64,
                in_flight=len(taken),
                taken=taken,
                log_point=now,
                log_ok=False,
                formal_ok=ok,
                verification_id=str(uuid.uuid4()),
            )

        @activity.defn(name="confirm_landed")
        async def confirm_landed(request: ConfirmInput) -> list[str]:
            self.looks.append((activity.info().current_attempt_scheduled_time, set(request.taken)))
            missing = self.unlanded[min(len(self.looks) - 1, len(self.unlanded) - 1)]
            return sorted(missing & set(request.taken))

        @activity.defn(name="record_verification")
        async def record_verification(record: VerificationRecord) -> None:
            self.verified.append(record)

        @activity.defn(name="begin_watch")
        async def begin_watch(request: WatchRequest) -> None:
            pass

        @activity.defn(name="end_watch")
        async def end_watch(pair: PairRef) -> None:
            pass

        @activity.defn(name="create_cid_set_file")
        async def create_cid_set_file(request: CreateFileRequest) -> CIDSetFile:
            self.creates.append((request.request_id, activity.info().current_attempt_scheduled_time))
            if len(self.creates) <= len(self.rate_limited):
                wait = self.rate_limited[len(self.creates) - 1]
                raise ApplicationError("file quota", wait, type="RateLimited", non_retryable=True)
            files.setdefault(request.request_id, len(files))
            return self._file(request.request_id, FileStatus.REQUESTED)

        @activity.defn(name="get_cid_set_file")
        async def get_cid_set_file(request: FileRef) -> CIDSetFile:
            file_id = request.file_id
            self.polls.append(activity.info().current_attempt_scheduled_time)
            if self.hold_first_poll and len(self.polls) == 1:
                self.polling.set()
                await self.release.wait()
            status = self.statuses[min(len(self.polls) - 1, len(self.statuses) - 1)]
            if status is FileStatus.AVAILABLE and files[file_id] < len(self.file_outcomes):
                status = self.file_outcomes[files[file_id]]
            return self._file(file_id, status)

        @activity.defn(name="stream_cid_file")
        async def stream_cid_file(request: StreamFileInput) -> StreamFileResult:
            return StreamFileResult(cids=request.cid_count, resumed=False)

        @activity.defn(name="diff_cid_sets")
        async def diff_cid_sets(scratch: Scratch) -> DiffResult:
            return DiffResult(dict_only=self.dict_only, local_only=self.local_only)

        @activity.defn(name="roll_cid_file_forward")
        async def roll_cid_file_forward(request: RollInput) -> RollResult:
            self.rolls.append(request.cursor.start)
            return RollResult(cursor=request.cursor, events=0, has_more=False, head=request.cursor.start)

        @activity.defn(name="judge_diff")
        async def judge_diff(request: JudgeInput) -> JudgedDiff:
            # Nothing was in flight: the diff is the divergence.
            return JudgedDiff(dict_only=self.dict_only, local_only=self.local_only, in_flight=0, recent=0)

        @activity.defn(name="repair_cids")
        async def repair_cids(request: RepairInput) -> RepairResult:
            self.repairs.append(request.side)
            count = self.dict_only if request.side is RepairSide.DICT_ONLY else self.local_only
            return RepairResult(repaired=count, skipped=0, vanished=0, remaining=0)

        @activity.defn(name="publish_outbox")
        async def publish_outbox(scratch: Scratch) -> int:
            self.outboxes.append(scratch.run_id)
            return self.dict_only + self.local_only

        @activity.defn(name="drop_scratch")
        async def drop_scratch(scratch: Scratch) -> int:
            self.dropped.append(scratch.run_id)
            return 3

        @activity.defn(name="publish_notice")
        async def publish_notice(request: NoticeInput) -> None:
            self.notices.append(request)

        @activity.defn(name="last_verifications")
        async def last_verifications(request: PairsRequest) -> list[PairVerification]:
            return []

        return [
            local_vsync,
            verify_sync,
            prove_sync,
            confirm_landed,
            record_verification,
            begin_watch,
            end_watch,
            create_cid_set_file,
            get_cid_set_file,
            stream_cid_file,
            diff_cid_sets,
            roll_cid_file_forward,
            judge_diff,
            repair_cids,
            publish_outbox,
            drop_scratch,
            publish_notice,
            last_verifications,
        ]

    @staticmethod
    def _file(file_id: str, status: FileStatus) -> CIDSetFile:
        available = status is FileStatus.AVAILABLE
        return CIDSetFile(
            file_id=file_id,
            participant=PARTICIPANT,
            key_type=KeyType.EVP,
            status=status,
            requested_at=datetime.now(UTC),
            cid_count=10 if available else 0,
            sha256="ab" * 32 if available else "",
        )

    def kinds(self) -> list[CoreEventType]:
        return [n.notice.event_type for n in self.notices]


def request(**changes: Any) -> ReconcileInput:
    values: dict[str, Any] = {"poll_initial": timedelta(minutes=5), "poll_max": timedelta(hours=1), **changes}
    return ReconcileInput(participant=PARTICIPANT, key_type=KeyType.EVP, **values)


@asynccontextmanager
async def started(
    env: WorkflowEnvironment, fake: FakeDict, argument: ReconcileInput
) -> AsyncIterator[WorkflowHandle[ReconcileVSync, ReconcileResult]]:
    """A run with a worker of its own (its own task queue) serving the fake activities."""
    queue = f"reconcile-{uuid.uuid4()}"
    async with current_worker(env.client, task_queue=queue, workflows=[ReconcileVSync], activities=fake.activities()):
        yield await env.client.start_workflow(
            ReconcileVSync.run,
            argument,
            id=f"reconcile-{uuid.uuid4()}",
            task_queue=queue,
            search_attributes=reconcile_search_attributes(PARTICIPANT, KeyType.EVP),
        )


async def reconcile(env: WorkflowEnvironment, fake: FakeDict, argument: ReconcileInput) -> ReconcileResult:
    async with started(env, fake, argument) as handle:
        return await handle.result()


async def test_ok_at_once_needs_no_file(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[True])
    result = await reconcile(time_skipping_env, fake, request())
    assert (result.outcome, result.verifications, result.files, result.added, result.removed) == (
        Outcome.OK,
        1,
        0,
        0,
        0,
    )
    assert fake.creates == []
    assert fake.repairs == []
    assert fake.kinds() == [CoreEventType.RECONCILIATION_COMPLETED]
    assert [v.ok for v in fake.verified] == [True]  # what the 36-hour check reads


async def test_a_proof_stands_when_its_in_flight_cids_land_late_within_the_patience(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """cidsync's own ingestion stalled (the broker, Temporal or the workers restarting: 60 s in chaos seed
    150629): the CIDs a proof took as in flight land after several graces, within `landing_looks`. The proof
    stands: looked at again a grace apart, each look asking only about those still missing; no file, no
    FAILED for a slow change."""
    fake = FakeDict(
        verdicts=[True],
        in_flight={"a" * 64: True, "b" * 64: False, "c" * 64: True},
        unlanded=[{"a" * 64, "b" * 64, "c" * 64}, {"a" * 64, "b" * 64}, {"b" * 64}, set()],
    )
    result = await reconcile(time_skipping_env, fake, request(grace=timedelta(minutes=2)))
    assert (result.outcome, result.files, result.proof) == (Outcome.OK, 0, "formal"), result
    asked = [cids for _, cids in fake.looks]
    assert asked == [{"a" * 64, "b" * 64, "c" * 64}, {"a" * 64, "b" * 64, "c" * 64}, {"a" * 64, "b" * 64}, {"b" * 64}]
    gaps = [later - earlier for (earlier, _), (later, _) in zip(fake.looks, fake.looks[1:], strict=False)]
    assert all(timedelta(minutes=2) <= gap < timedelta(minutes=2, seconds=5) for gap in gaps), gaps  # a grace apart
    assert [v.ok for v in fake.verified] == [True]


async def test_a_proof_whose_in_flight_cid_never_lands_is_withdrawn_after_the_patience(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """A change DICT made behind cidsync's back in the proof's last moments never lands: after
    `landing_looks` looks a grace apart the proof is withdrawn, and the NOK takes the pair to a CID file."""
    fake = FakeDict(verdicts=[True], in_flight={"d" * 64: True}, unlanded=[{"d" * 64}])
    argument = request(grace=timedelta(minutes=2), landing_looks=5)
    async with started(time_skipping_env, fake, argument) as handle:
        result = await handle.result()
        progress = await handle.query(ReconcileVSync.progress)
    assert progress.withdrawn == 1
    assert (result.outcome, result.files) == (Outcome.REPAIRED, 1), result
    # A look a grace after the proof, then one each grace: 5 in 10 minutes, the default.
    assert len(fake.looks) == 5
    assert timedelta(minutes=8) <= fake.looks[-1][0] - fake.looks[0][0] < timedelta(minutes=8, seconds=20)


async def test_file_is_polled_with_durable_backoff_over_simulated_hours(time_skipping_env: WorkflowEnvironment) -> None:
    processing = [FileStatus.PROCESSING] * 4
    fake = FakeDict(verdicts=[False, True], statuses=[*processing, FileStatus.AVAILABLE])
    result = await reconcile(time_skipping_env, fake, request())
    assert (result.outcome, result.added, result.removed, result.verifications) == (Outcome.REPAIRED, 3, 2, 2)
    assert len(fake.creates) == 1
    assert result.files == 1
    gaps = [later - earlier for earlier, later in zip(fake.polls, fake.polls[1:], strict=False)]
    # 5 min, then doubling up to the 1 h cap: 10 min, 20 min, 40 min, 1 h between the five polls.
    minutes = [round(gap.total_seconds() / 60) for gap in gaps]
    assert minutes == [10, 20, 40, 60]
    assert fake.polls[-1] - fake.creates[0][1] >= timedelta(hours=2)
    assert fake.repairs == [RepairSide.DICT_ONLY, RepairSide.LOCAL_ONLY]
    assert len(fake.dropped) == 1  # the round's scratch keys are dropped
    completed = fake.notices[-1].notice
    assert isinstance(completed, ReconciliationCompleted)
    assert (completed.outcome, completed.added, completed.removed) == (Outcome.REPAIRED, 3, 2)


async def test_a_rate_limited_file_request_waits_the_retry_after_and_reuses_its_key(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fake = FakeDict(verdicts=[False, True], rate_limited=[3 * 3600.0])
    result = await reconcile(time_skipping_env, fake, request())
    assert result.outcome is Outcome.REPAIRED
    (first_key, first_at), (second_key, second_at) = fake.creates
    assert first_key == second_key  # the refused request made no file: the same idempotency key again
    assert second_at - first_at >= timedelta(hours=3)
    assert result.files == 1


async def test_a_failed_file_is_replaced_by_a_new_request(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False, True], file_outcomes=[FileStatus.ERROR])
    result = await reconcile(time_skipping_env, fake, request())
    assert result.outcome is Outcome.REPAIRED
    keys = [key for key, _ in fake.creates]
    assert len(keys) == 2
    assert keys[0] != keys[1]


async def test_still_nok_after_the_allowed_rounds_fails_loudly(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False])
    with pytest.raises(WorkflowFailureError) as failed:
        await reconcile(time_skipping_env, fake, request(max_rounds=2))
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ReconciliationFailed"
    assert "still answers NOK after 2 repair rounds" in cause.message
    assert cause.details[0]["outcome"] == "FAILED"
    assert cause.details[0]["verifications"] == 3
    assert len(fake.creates) == 2
    assert len(fake.dropped) == 2
    completed = fake.notices[-1].notice
    assert isinstance(completed, ReconciliationCompleted)
    assert completed.outcome is Outcome.FAILED


async def _until(handle: WorkflowHandle[Any, Any], check: Callable[[Progress], bool]) -> Progress:
    for _ in range(600):
        progress = await handle.query(ReconcileVSync.progress)
        if check(progress):
            return progress
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached: last progress {progress}")


async def test_large_divergence_waits_for_approval_with_reminders(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False, True], dict_only=150, local_only=20)
    argument = request(approval_reminder=timedelta(hours=4), approval_timeout=timedelta(days=30))
    async with started(time_skipping_env, fake, argument) as handle:
        waiting = await _until(handle, lambda p: p.awaiting_approval and p.reminders >= 2)
        assert (waiting.dict_only, waiting.local_only) == (150, 20)
        assert fake.repairs == []  # nothing repaired blindly
        # An operator finds it by its phase (visibility is eventually consistent: a moment's wait at most).
        query = f'CidPhase="awaiting approval" AND WorkflowId="{handle.id}"'
        found = []
        for _ in range(100):
            if found := [w.id async for w in time_skipping_env.client.list_workflows(query)]:
                break
            await asyncio.sleep(0.1)
        assert found == [handle.id]
        assert await handle.execute_update(ReconcileVSync.approve, Decision(operator="ana", reason="checked"))
        result = await handle.result()
    assert result.outcome is Outcome.REPAIRED
    assert (result.added, result.removed) == (150, 20)
    assert (result.decision, result.operator, result.decision_reason) == ("approved", "ana", "checked")
    completed = fake.notices[-1].notice
    assert isinstance(completed, ReconciliationCompleted)
    assert (completed.decision, completed.operator, completed.decision_reason) == ("approved", "ana", "checked")
    reminders = [k for k in fake.kinds() if k is CoreEventType.APPROVAL_NEEDED]
    assert len(reminders) >= 3  # the first call for approval and at least two reminders, 4 h apart
    description = await handle.describe()
    assert description.typed_search_attributes.get(OUTCOME) == "REPAIRED"
    assert description.typed_search_attributes.get(PHASE) == "done"


async def test_a_decision_is_refused_when_no_approval_is_pending(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False], statuses=[FileStatus.PROCESSING])
    async with started(
        time_skipping_env, fake, request(file_deadline=timedelta(days=60), poll_max=timedelta(days=1))
    ) as handle:
        await _until(handle, lambda p: p.phase == "waiting for file")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ReconcileVSync.approve, Decision(operator="ana"))
        assert "no approval is pending" in str(refused.value.cause)
        await handle.terminate("test done")


async def test_a_cancelled_run_cleans_up_and_reports_before_it_ends(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False], dict_only=500, local_only=0)
    async with started(time_skipping_env, fake, request(approval_timeout=timedelta(days=30))) as handle:
        await _until(handle, lambda p: p.awaiting_approval)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    assert fake.outboxes == fake.dropped  # the outbox was published, then the scratch keys went
    assert len(fake.dropped) == 1
    completed = fake.notices[-1].notice
    assert isinstance(completed, ReconciliationCompleted)
    assert (completed.outcome, completed.reason) == (Outcome.FAILED, "cancelled")


async def test_a_run_cancelled_while_an_activity_runs_ends_cancelled_not_failed(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    # The activity is cancelled with the run and reaches the workflow as an ActivityError whose cause is
    # the cancellation: still a cancel, reported as one, with the round's scratch keys cleaned up.
    fake = FakeDict(verdicts=[False], hold_first_poll=True)
    try:
        async with started(time_skipping_env, fake, request()) as handle:
            await asyncio.wait_for(fake.polling.wait(), timeout=30)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError) as ended:
                await handle.result()
    finally:
        fake.release.set()
    assert isinstance(ended.value.cause, CancelledError)
    assert len(fake.dropped) == 1
    completed = fake.notices[-1].notice
    assert isinstance(completed, ReconciliationCompleted)
    assert (completed.outcome, completed.reason) == (Outcome.FAILED, "cancelled")


async def test_a_rejected_repair_ends_as_needs_attention(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False], dict_only=500, local_only=0)
    async with started(time_skipping_env, fake, request(approval_timeout=timedelta(days=30))) as handle:
        await _until(handle, lambda p: p.awaiting_approval)
        await handle.execute_update(ReconcileVSync.reject, Decision(operator="ana", reason="looks like a DICT bug"))
        result = await handle.result()
    assert result.outcome is Outcome.NEEDS_ATTENTION
    assert result.reason == "rejected by ana: looks like a DICT bug"
    assert (result.decision, result.operator, result.decision_reason) == ("rejected", "ana", "looks like a DICT bug")
    assert fake.repairs == []
    assert len(fake.dropped) == 1


async def test_no_decision_in_time_ends_as_needs_attention(time_skipping_env: WorkflowEnvironment) -> None:
    fake = FakeDict(verdicts=[False], dict_only=101, local_only=0)
    argument = request(approval_reminder=timedelta(hours=4), approval_timeout=timedelta(hours=10))
    result = await reconcile(time_skipping_env, fake, argument)
    assert result.outcome is Outcome.NEEDS_ATTENTION
    assert result.reason == "no operator decision within 10:00:00"
    assert (result.decision, result.operator) == ("timed out", "")
    assert fake.kinds().count(CoreEventType.APPROVAL_NEEDED) == 3  # at 0 h, 4 h and 8 h


def test_the_defaults_follow_the_issue() -> None:
    defaults = ReconcileInput(participant=PARTICIPANT, key_type=KeyType.CPF)
    assert defaults.divergence_threshold == 100
    assert defaults.approval_reminder == timedelta(hours=4)


def test_bad_settings_are_refused_before_any_run() -> None:
    with pytest.raises(ValueError, match="participant") as refused:
        ReconcileInput(participant="123", key_type=KeyType.CPF, divergence_threshold=-1, poll_initial=timedelta(0))
    text = str(refused.value)
    assert "divergence_threshold" in text
    with pytest.raises(ValueError, match="must be positive: poll_initial"):
        ReconcileInput(participant=PARTICIPANT, key_type=KeyType.CPF, poll_initial=timedelta(0))
