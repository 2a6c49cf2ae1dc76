"""Reconciliation end to end: the real worker, Temporal, Redis, Pulsar and the DICT simulator.

DICT is changed behind cidsync's back (entries added, removed and altered); one ReconcileVSync run must
bring the local set to DICT's, end with an OK verification, and tell core about every entry it changed.
"""

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from cidsync.bridge.models import FileStatus
from cidsync.cid import cid
from cidsync.core_events import CoreEventType, Outcome
from cidsync.entry import DictEntry, KeyType, PairRef
from cidsync.naming import OUTCOME, reconcile_workflow_id
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from starters.reconciliation import start_reconciliation
from tests.e2e.reconciliation import (
    Running,
    apply_locally,
    core_messages,
    pair_entries,
    seed_pair,
    until,
)
from workflows.reconcile_vsync import Decision, ReconcileInput, ReconcileVSync
from workflows.verify_all import VerifyAllInput, VerifyAllPairs

GRACE = timedelta(seconds=1)  # a quiet pair: nothing is in flight for long
KEY_TYPE = KeyType.EVP


async def test_added_removed_and_altered_entries_are_repaired_and_core_is_told(
    temporal_env: WorkflowEnvironment,
    running_on_each_store: Running,
    simulator_admin: SimulatorAdmin,
    participant: str,
) -> None:
    running = running_on_each_store
    entries = pair_entries(participant, KEY_TYPE, 300, seed=10_000)
    await seed_pair(simulator_admin, running.store, entries)
    by_cid = {cid(e): e for e in entries}
    diverged = await simulator_admin.diverge(participant, KEY_TYPE, add=5, remove=4, alter=3, seed=11)
    assert not (
        await running.bridge.verify_sync(participant, KEY_TYPE, await running.store.view.vsync(participant, KEY_TYPE))
    ).ok

    request = ReconcileInput(
        participant=participant, key_type=KEY_TYPE, grace=GRACE, poll_initial=timedelta(seconds=0.2)
    )
    handle = await start_reconciliation(temporal_env.client, request, running.queue)
    result = await handle.result()

    # DICT-only: 5 new entries and the 3 altered ones' new CIDs. Local-only: the 4 DICT removed (the
    # altered ones' old CIDs leave with their key's move to the new CID).
    assert result.outcome is Outcome.REPAIRED
    assert (result.added, result.removed, result.skipped) == (8, 4, 0)
    assert result.verifications == 2
    assert result.files == 1
    local = await running.store.view.cids(participant, KEY_TYPE)
    expected = set(by_cid) - set(diverged.removed) - set(diverged.altered_old)
    expected |= set(diverged.added) | set(diverged.altered_new)
    assert local == expected
    assert (
        await running.bridge.verify_sync(participant, KEY_TYPE, await running.store.view.vsync(participant, KEY_TYPE))
    ).ok

    messages = await core_messages(running.core_events, 8 + 4 + 1)
    events = [json.loads(m.data()) for m in messages]
    kinds = [e["event_type"] for e in events]
    assert kinds.count(CoreEventType.ENTRY_ADDED) == 8
    assert kinds.count(CoreEventType.ENTRY_REMOVED) == 4
    assert kinds[-1] == CoreEventType.RECONCILIATION_COMPLETED
    added = {e["cid"]: e for e in events if e["event_type"] == CoreEventType.ENTRY_ADDED}
    assert set(added) == set(diverged.added) | set(diverged.altered_new)
    for value, event in added.items():  # the entry as DICT holds it (no entry id): it hashes to its CID
        entry = DictEntry.model_validate(event["entry"])
        assert cid(entry) == value
        assert event["entry_id"] is None  # DICT does not know core's ids: core finds its record by the key
    removed = {e["cid"]: e for e in events if e["event_type"] == CoreEventType.ENTRY_REMOVED}
    assert set(removed) == set(diverged.removed)
    for value, event in removed.items():  # the entry's identity only: no key, no owner
        assert event["entry_id"] == str(by_cid[value].id)
        assert "entry" not in event or event["entry"] is None
        assert by_cid[value].key not in json.dumps(event)
    # A removal is keyed by the entry id, in order with core's own events for the entry; an addition by CID.
    keys = {m.partition_key() for m in messages[:-1]}
    assert keys == {e["entry_id"] or e["cid"] for e in events[:-1]}
    completed = events[-1]
    assert completed["outcome"] == "REPAIRED"
    assert (completed["added"], completed["removed"], completed["key_type"]) == (8, 4, "EVP")
    assert messages[-1].partition_key() == "EVP"


async def test_a_key_changed_by_an_event_during_the_run_is_not_repaired_from_the_older_snapshot(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    entries = pair_entries(participant, KEY_TYPE, 50, seed=10_000)
    await seed_pair(simulator_admin, running.store, entries)
    await simulator_admin.diverge(participant, KEY_TYPE, add=2, seed=3)
    # The first look at the file comes 3 s after its request: the window in which the event below lands
    # between DICT's snapshot and the diff, even on a loaded machine.
    request = ReconcileInput(participant=participant, key_type=KEY_TYPE, grace=GRACE, poll_initial=timedelta(seconds=3))
    handle = await start_reconciliation(temporal_env.client, request, running.queue)
    await until(handle, lambda p: p.phase == "waiting for file")  # DICT's snapshot is taken
    # Core registers a new key in DICT and its created event reaches us: the snapshot may lack it, and a
    # diff against the file alone would call it local-only (a blind repair would delete a live entry).
    # Rolled forward with DICT's log, the file has it: it is no divergence at all, and nothing is skipped.
    (fresh,) = pair_entries(participant, KEY_TYPE, 1, seed=uuid.uuid4().int)
    await simulator_admin.load([fresh])
    await apply_locally(running.store, [fresh], sequence=7)
    result = await handle.result()

    assert result.outcome is Outcome.REPAIRED
    assert (result.added, result.removed, result.skipped) == (2, 0, 0)
    assert cid(fresh) in await running.store.view.cids(participant, KEY_TYPE)
    events = [json.loads(m.data()) for m in await core_messages(running.core_events, 3)]
    assert [e["event_type"] for e in events].count(CoreEventType.ENTRY_REMOVED) == 0


async def test_a_second_trigger_joins_the_running_reconciliation(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await seed_pair(simulator_admin, running.store, pair_entries(participant, KEY_TYPE, 20, seed=105))
    await simulator_admin.diverge(participant, KEY_TYPE, remove=1, seed=5)
    request = ReconcileInput(participant=participant, key_type=KEY_TYPE, grace=GRACE, poll_initial=timedelta(seconds=3))
    first = await start_reconciliation(temporal_env.client, request, running.queue)
    await until(first, lambda p: p.phase == "waiting for file")
    second = await start_reconciliation(
        temporal_env.client, request.model_copy(update={"trigger": "cli"}), running.queue
    )
    assert second.result_run_id == first.result_run_id
    assert (await second.result()).outcome is Outcome.REPAIRED
    again = await start_reconciliation(temporal_env.client, request, running.queue)  # a new run once done
    assert again.result_run_id != first.result_run_id
    assert (await again.result()).outcome is Outcome.OK


async def test_the_scheduled_run_joins_a_running_reconciliation_and_starts_the_others(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """VerifyAllPairs starts each pair's run as an abandoned child; one already running (here, waiting for
    an operator) is joined, not doubled, and is left to finish after the scheduled run has ended."""
    await seed_pair(simulator_admin, running.store, pair_entries(participant, KEY_TYPE, 20, seed=107))
    # DICT's keys are global: a seed of its own, so the added entries are no other test's (the CLI's tests
    # load `--synthetic` with seed 9).
    await simulator_admin.diverge(participant, KEY_TYPE, add=2, seed=40_000 + uuid.uuid4().int % 10_000)
    waiting = ReconcileInput(
        participant=participant,
        key_type=KEY_TYPE,
        grace=GRACE,
        divergence_threshold=0,
        poll_initial=timedelta(seconds=0.2),
    )
    pending = await start_reconciliation(temporal_env.client, waiting, running.queue)
    await until(pending, lambda p: p.awaiting_approval)
    pairs = [PairRef(participant=participant, key_type=k) for k in (KEY_TYPE, KeyType.CPF)]
    result = await temporal_env.client.execute_workflow(
        VerifyAllPairs.run, VerifyAllInput(pairs=pairs), id=f"verify-all-{uuid.uuid4()}", task_queue=running.queue
    )
    assert result.joined == [pending.id]
    assert result.started == [reconcile_workflow_id(participant, KeyType.CPF)]
    started = temporal_env.client.get_workflow_handle_for(ReconcileVSync.run, result.started[0])
    assert (await started.result()).outcome is Outcome.OK  # outlives its parent (ABANDON)
    assert (await pending.describe()).run_id == pending.result_run_id  # the same run, still waiting
    await pending.execute_update(ReconcileVSync.approve, Decision(operator="ana"))
    assert (await pending.result()).outcome is Outcome.REPAIRED


async def test_dict_never_producing_a_usable_file_fails_loudly_and_changes_nothing(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await seed_pair(simulator_admin, running.store, pair_entries(participant, KEY_TYPE, 30, seed=106))
    await simulator_admin.diverge(participant, KEY_TYPE, add=2, seed=6)
    before = await running.store.view.cids(participant, KEY_TYPE)
    await simulator_admin.set_faults(file_outcome=FileStatus.ERROR)
    request = ReconcileInput(
        participant=participant, key_type=KEY_TYPE, grace=GRACE, poll_initial=timedelta(seconds=0.2)
    )
    handle = await start_reconciliation(temporal_env.client, request, running.queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ReconciliationFailed"
    assert "no usable CID file after 3 requests" in cause.message
    assert cause.details[0]["files"] == 3
    assert await running.store.view.cids(participant, KEY_TYPE) == before
    (completed,) = [json.loads(m.data()) for m in await core_messages(running.core_events, 1)]
    assert (completed["event_type"], completed["outcome"]) == (CoreEventType.RECONCILIATION_COMPLETED, "FAILED")
    description = await handle.describe()
    assert description.typed_search_attributes.get(OUTCOME) == "FAILED"


@pytest.mark.parametrize(
    ("local", "in_dict", "add", "remove", "alter"),
    [
        (0, 25, 0, 0, 0),  # nothing local yet: every CID comes from DICT
        (25, 25, 0, 25, 0),  # DICT removed everything: the set empties, the VSync is zero again
        (60, 60, 7, 5, 9),  # a bit of everything
    ],
    ids=["local-empty", "dict-emptied", "mixed"],
)
async def test_after_a_successful_reconciliation_the_sets_are_equal_and_dict_says_ok(
    temporal_env: WorkflowEnvironment,
    running: Running,
    simulator_admin: SimulatorAdmin,
    participant: str,
    local: int,
    in_dict: int,
    add: int,
    remove: int,
    alter: int,
) -> None:
    # docs/design.md §4, I4, including the edges: an empty local set and an emptied DICT.
    entries = pair_entries(participant, KEY_TYPE, max(local, in_dict), seed=20_000 + uuid.uuid4().int % 1000)
    await simulator_admin.load(entries[:in_dict])
    await apply_locally(running.store, entries[:local])
    await simulator_admin.diverge(participant, KEY_TYPE, add=add, remove=remove, alter=alter, seed=8)
    request = ReconcileInput(
        participant=participant, key_type=KEY_TYPE, grace=GRACE, poll_initial=timedelta(seconds=0.2)
    )
    result = await (await start_reconciliation(temporal_env.client, request, running.queue)).result()

    assert result.outcome is Outcome.REPAIRED
    file = await running.bridge.create_cid_set_file(participant, KEY_TYPE)
    while not (file := await running.bridge.get_cid_set_file(participant, file.file_id)).status.final:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    in_dict_now = {c async for page in running.bridge.cid_pages(participant, file.file_id) for c in page.cids}
    assert await running.store.view.cids(participant, KEY_TYPE) == in_dict_now
    local_vsync = await running.store.view.vsync(participant, KEY_TYPE)
    assert (await running.bridge.verify_sync(participant, KEY_TYPE, local_vsync)).ok
    if not in_dict_now:
        assert local_vsync == "0" * 64
