"""CreateCID, UpdateCID and DeleteCID with recorded fake activities; time skipping for the waits.

Their input is the starter's minimal change (`CIDChange.of_event`), never the event's entry."""

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from activities.cid_store import KeySequenceQuery
from cidsync.change import CIDChange
from cidsync.cid import ZERO_VSYNC, cid, xor_cid
from cidsync.entry import Entry
from cidsync.events import DeletionType, EventType
from cidsync.naming import event_workflow_id
from cidsync.producer import build_event
from cidsync.store.models import ApplyResult, ApplyStatus
from cidsync_tooling.synthetic import synthetic_entry
from tests.helpers.workers import current_worker
from workflows.cid_change import CIDResult
from workflows.create_cid import CreateCID
from workflows.delete_cid import DeleteCID, DeleteCIDInput
from workflows.update_cid import UpdateCID


@dataclass
class FakeStore:
    """The versioned apply in memory, recording every change it is given."""

    states: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    applied: list[CIDChange] = field(default_factory=list)

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="apply_cid_change")
        async def apply_cid_change(change: CIDChange) -> ApplyResult:
            self.applied.append(change)
            previous = self.states.get(change.key_id)
            if previous is not None and previous[0] >= change.sequence:
                seen = ApplyStatus.DUPLICATE if previous == (change.sequence, change.cid) else ApplyStatus.STALE
                return ApplyResult(status=seen, previous_sequence=previous[0], vsync=self.vsync())
            self.states[change.key_id] = (change.sequence, change.cid)
            return ApplyResult(
                status=ApplyStatus.APPLIED, previous_sequence=previous[0] if previous else None, vsync=self.vsync()
            )

        @activity.defn(name="key_sequence")
        async def key_sequence(query: KeySequenceQuery) -> int | None:
            state = self.states.get(query.key_id)
            return state[0] if state else None

        return [apply_cid_change, key_sequence]

    def vsync(self) -> str:
        value = ZERO_VSYNC
        for _, current in self.states.values():
            if current:
                value = xor_cid(value, current)
        return value


SECRET = b"workflow-tests-secret"


def event(
    event_type: EventType,
    sequence: int,
    deletion: DeletionType | None = None,
    seed: int = 1,
    entry: Entry | None = None,
) -> CIDChange:
    """The change the starter makes of such an event."""
    entry = entry or synthetic_entry(random.Random(1), "12345678")
    built = build_event(event_type, entry, "user-1", sequence=sequence, deletion_type=deletion)
    return CIDChange.of_event(built, SECRET)


def local_activity_times(history: WorkflowHistory) -> list[datetime]:
    return [e.event_time.ToDatetime() for e in history.events if e.HasField("marker_recorded_event_attributes")]


async def run(env: WorkflowEnvironment, store: FakeStore, workflow: Any, argument: object, wf_id: str) -> CIDResult:
    queue = f"cid-{uuid.uuid4()}"
    async with current_worker(
        env.client, task_queue=queue, workflows=[CreateCID, UpdateCID, DeleteCID], activities=store.activities()
    ):
        result: CIDResult = await env.client.execute_workflow(workflow, argument, id=wf_id, task_queue=queue)
        return result


async def test_create_then_update_apply_the_computed_cids(time_skipping_env: WorkflowEnvironment) -> None:
    store = FakeStore()
    entry = synthetic_entry(random.Random(1), "12345678")
    updated_entry = entry.model_copy(update={"account_number": "777"})
    created, updated = event(EventType.CREATED, 10, entry=entry), event(EventType.UPDATED, 11, entry=updated_entry)
    first = await run(time_skipping_env, store, CreateCID.run, created, f"t-{uuid.uuid4()}")
    second = await run(time_skipping_env, store, UpdateCID.run, updated, f"t-{uuid.uuid4()}")
    assert [c.cid for c in store.applied] == [cid(entry), cid(updated_entry)]
    assert [c.sequence for c in store.applied] == [10, 11]
    assert first.outcome == second.outcome == "applied"
    assert second.vsync == cid(updated_entry)


async def test_immediate_delete_applies_at_once(time_skipping_env: WorkflowEnvironment) -> None:
    store = FakeStore()
    gone = event(EventType.DELETED, 12, DeletionType.IMMEDIATE)
    result = await run(time_skipping_env, store, DeleteCID.run, DeleteCIDInput(change=gone), f"t-{uuid.uuid4()}")
    assert result.outcome == "applied"
    assert [(c.cid, c.sequence) for c in store.applied] == [(None, 12)]


async def test_waiting_period_delete_waits_30_days_durably(time_skipping_env: WorkflowEnvironment) -> None:
    store = FakeStore()
    created = event(EventType.CREATED, 10)
    await run(time_skipping_env, store, CreateCID.run, created, f"t-{uuid.uuid4()}")
    gone = event(EventType.DELETED, 20, DeletionType.WAITING_PERIOD)
    wf_id = event_workflow_id(gone)
    # Rechecking every 10 days keeps the test at 3 skipped timers (each costs ~1 s of wall time here).
    waiting = DeleteCIDInput(change=gone, recheck_every=timedelta(days=10))
    result = await run(time_skipping_env, store, DeleteCID.run, waiting, wf_id)
    assert result.outcome == "applied"
    assert [c.cid is None for c in store.applied] == [False, True]
    assert store.vsync() == ZERO_VSYNC
    history = await time_skipping_env.client.get_workflow_handle(wf_id).fetch_history()
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(timers) == 3  # durable timers, each followed by a check of the store
    # The apply is a local activity: its marker's time is when it ran, in the workflow's (skipped) time.
    started, applied = history.events[0].event_time.ToDatetime(), local_activity_times(history)[-1]
    assert applied - started >= timedelta(days=30)


def test_the_defaults_are_dicts_30_days_rechecked_daily() -> None:
    defaults = DeleteCIDInput(change=event(EventType.DELETED, 1, DeletionType.WAITING_PERIOD))
    assert (defaults.waiting_period, defaults.recheck_every) == (timedelta(days=30), timedelta(days=1))


async def test_a_newer_event_cancels_the_waiting_delete(time_skipping_env: WorkflowEnvironment) -> None:
    store = FakeStore()
    gone = event(EventType.DELETED, 20, DeletionType.WAITING_PERIOD)
    # While the delete waits, the key is re-registered: a newer event for it is applied.
    await run(time_skipping_env, store, CreateCID.run, event(EventType.CREATED, 21), f"t-{uuid.uuid4()}")
    result = await run(time_skipping_env, store, DeleteCID.run, DeleteCIDInput(change=gone), f"t-{uuid.uuid4()}")
    assert result.outcome == "superseded"
    assert [c.sequence for c in store.applied] == [21]  # the delete never touched the store
    assert store.vsync() != ZERO_VSYNC


async def test_an_event_sent_to_the_wrong_workflow_fails_without_retrying(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    store = FakeStore()
    with pytest.raises(WorkflowFailureError) as failed:
        await run(time_skipping_env, store, CreateCID.run, event(EventType.UPDATED, 5), f"t-{uuid.uuid4()}")
    assert "sent to the wrong workflow" in str(failed.value.cause)
    assert store.applied == []
