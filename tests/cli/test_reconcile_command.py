"""`cidsync reconcile` and `cidsync schedule ensure` through the console script, against a real worker."""

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from cidsync.core_events import CoreEventType
from cidsync.entry import KeyType, PairRef
from cidsync.naming import follow_workflow_id, reconcile_workflow_id
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from starters.schedules import FRESHNESS_SCHEDULE_ID, VERIFY_SCHEDULE_ID
from tests.e2e.reconciliation import Running, core_messages, pair_entries, seed_pair, until
from tests.helpers.cli_runner import cidsync
from tests.helpers.eventually import eventually
from workers.pair_state import read_reconciliations, read_verifications
from workflows.check_freshness import CheckVerificationFreshness, FreshnessInput
from workflows.reconcile_vsync import ReconcileVSync


def temporal_flags(env: WorkflowEnvironment, queue: str) -> list[str]:
    return ["--temporal-address", env.client.service_client.config.target_host, "--task-queue", queue]


async def test_reconcile_wait_prints_the_outcome_as_json(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await seed_pair(simulator_admin, running.store, pair_entries(participant, KeyType.EMAIL, 40, seed=102))
    await simulator_admin.diverge(participant, KeyType.EMAIL, add=2, seed=2)
    result = await asyncio.to_thread(
        cidsync,
        "reconcile",
        "--participant",
        participant,
        "--key-type",
        "EMAIL",
        "--wait",
        "--grace",
        "1",
        *temporal_flags(temporal_env, running.queue),
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["workflow_id"] == reconcile_workflow_id(participant, KeyType.EMAIL)
    assert (outcome["outcome"], outcome["added"], outcome["removed"], outcome["verifications"]) == ("REPAIRED", 2, 0, 2)


async def test_an_operator_approves_a_large_repair_from_the_cli(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await seed_pair(simulator_admin, running.store, pair_entries(participant, KeyType.PHONE, 30, seed=104))
    await simulator_admin.diverge(participant, KeyType.PHONE, add=3, remove=2, seed=4)
    flags = temporal_flags(temporal_env, running.queue)
    started = await asyncio.to_thread(
        cidsync,
        "reconcile",
        "--participant",
        participant,
        "--key-type",
        "PHONE",
        "--threshold",
        "4",
        "--grace",
        "1",
        *flags,
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    handle = temporal_env.client.get_workflow_handle_for(ReconcileVSync.run, workflow_id)
    await until(handle, lambda p: p.awaiting_approval)
    shown = await asyncio.to_thread(cidsync, "reconcile", "progress", workflow_id, *flags)
    assert shown.returncode == 0, shown.stderr
    progress = json.loads(shown.stdout)
    assert (progress["phase"], progress["dict_only"], progress["local_only"]) == ("awaiting approval", 3, 2)
    # What the workers' gauges report meanwhile (workers/pair_state.py): the pair waits, unproved.
    pair = (participant, "PHONE")
    waiting = await eventually(
        lambda: read_reconciliations(temporal_env.client), lambda found: pair in found.awaiting_since, "listed"
    )
    assert 0 <= time.time() - waiting.awaiting_since[pair] < 120
    assert waiting.phases.get("awaiting approval", 0) >= 1
    assert (await read_verifications(running.store, (participant,)))[pair].last_ok is None
    approved = await asyncio.to_thread(
        cidsync, "reconcile", "approve", workflow_id, "--operator", "ana", "--reason", "checked with DICT", *flags
    )
    assert approved.returncode == 0, approved.stderr
    result = await handle.result()
    assert (result.outcome.value, result.added, result.removed) == ("REPAIRED", 3, 2)
    await eventually(
        lambda: read_reconciliations(temporal_env.client), lambda found: pair not in found.awaiting_since, "gone"
    )
    verified = await read_verifications(running.store, (participant,))
    assert not verified[pair].nok
    assert verified[pair].last_ok is not None
    late = await asyncio.to_thread(cidsync, "reconcile", "reject", workflow_id, *flags)
    assert late.returncode == 1
    assert late.stderr


def test_reconcile_arguments_are_checked_before_anything_runs() -> None:
    missing = cidsync("reconcile", "--key-type", "CPF")
    assert missing.returncode == 2
    assert "--participant" in missing.stderr
    no_id = cidsync("reconcile", "approve")
    assert no_id.returncode == 2
    assert "WORKFLOW_ID" in no_id.stderr
    bad = cidsync("reconcile", "--participant", "123", "--key-type", "CPF")
    assert bad.returncode == 2
    assert "8 digits" in bad.stderr


def test_schedule_and_follow_ensure_need_participants_and_sane_settings() -> None:
    none = cidsync("schedule", "ensure", env={"CIDSYNC_PARTICIPANTS": "", "CIDSYNC_STATE_DIR": "/nonexistent"})
    assert none.returncode == 2
    assert "CIDSYNC_PARTICIPANTS" in none.stderr
    zone = cidsync("schedule", "ensure", "--participants", "12345678", "--time-zone", "Mars/Olympus")
    assert zone.returncode == 2
    assert "unknown time zone" in zone.stderr
    follow = cidsync("follow", "ensure", env={"CIDSYNC_PARTICIPANTS": "", "CIDSYNC_STATE_DIR": "/nonexistent"})
    assert follow.returncode == 2
    assert "CIDSYNC_PARTICIPANTS" in follow.stderr
    grace = cidsync("follow", "ensure", "--participants", "12345678", "--grace-seconds", "0", "--poll-seconds", "-1")
    assert grace.returncode == 2
    assert "--grace-seconds: must be positive" in grace.stderr
    assert "--poll-seconds: must be positive" in grace.stderr


async def test_schedule_ensure_creates_then_updates_and_its_runs_verify_every_pair(
    temporal_env: WorkflowEnvironment, running: Running, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    flags = temporal_flags(temporal_env, running.queue)
    first = await asyncio.to_thread(cidsync, "schedule", "ensure", "--participants", participant, *flags)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["schedules"] == {
        VERIFY_SCHEDULE_ID: "created",
        FRESHNESS_SCHEDULE_ID: "created",
    }
    followers = {follow_workflow_id(participant, k) for k in KeyType}
    assert json.loads(first.stdout)["followers"] == dict.fromkeys(followers, "started")
    again = await asyncio.to_thread(cidsync, "schedule", "ensure", "--participants", participant, *flags)
    assert json.loads(again.stdout)["schedules"] == {
        VERIFY_SCHEDULE_ID: "updated",
        FRESHNESS_SCHEDULE_ID: "updated",
    }
    assert json.loads(again.stdout)["followers"] == dict.fromkeys(followers, "running")  # one per pair, kept
    await followers_listed(temporal_env, followers)
    for workflow_id in followers:
        await temporal_env.client.get_workflow_handle(workflow_id).terminate("test over")

    verify = temporal_env.client.get_schedule_handle(VERIFY_SCHEDULE_ID)
    schedule = (await verify.describe()).schedule
    calendar = schedule.spec.calendars[0]
    assert (calendar.hour[0].start, calendar.minute[0].start) == (3, 0)
    assert schedule.spec.time_zone_name == "America/Sao_Paulo"
    assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert schedule.policy.catchup_window == timedelta(hours=12)
    assert isinstance(schedule.action, ScheduleActionStartWorkflow)

    # A run of the schedule starts every pair's reconciliation under the pair's own id.
    await verify.trigger()
    for key_type in KeyType:  # nothing stored on either side: every VSync is zero, DICT agrees
        handle = temporal_env.client.get_workflow_handle_for(
            ReconcileVSync.run, reconcile_workflow_id(participant, key_type)
        )
        async with asyncio.timeout(60):
            while True:
                try:
                    result = await handle.result()
                    break
                except Exception:  # not started yet
                    await asyncio.sleep(0.2)
        assert result.outcome.value == "OK"
    await verify.delete()
    await temporal_env.client.get_schedule_handle(FRESHNESS_SCHEDULE_ID).delete()

    # Freshness: every pair of `participant` was just verified OK; a pair never verified is stale.
    never = f"{uuid.uuid4().int % 10**8:08d}"
    pairs = [PairRef(participant=participant, key_type=KeyType.CPF), PairRef(participant=never, key_type=KeyType.EVP)]
    stale = await temporal_env.client.execute_workflow(
        CheckVerificationFreshness.run,
        FreshnessInput(pairs=pairs),
        id=f"fresh-{uuid.uuid4()}",
        task_queue=running.queue,
    )
    assert [(s.participant, s.key_type) for s in stale] == [(never, KeyType.EVP)]
    # The completions of the five reconciliations and the stale alert, in whatever order they were sent (a
    # completion goes through the run's outbox, which a busy machine may flush after the alert). The
    # schedule's own hourly run, aligned to the hour, alerts on this participant's pairs if the test runs
    # across one before they were verified (one run did, at 06:00): those alerts are set aside.
    events: list[dict[str, Any]] = []
    while len(events) < 6:
        [message] = await core_messages(running.core_events, 1)
        event = json.loads(message.data())
        if (event["event_type"], event.get("participant")) != (CoreEventType.VERIFICATION_STALE, participant):
            events.append(event)
    kinds = sorted(e["event_type"] for e in events)
    assert kinds == [CoreEventType.RECONCILIATION_COMPLETED] * 5 + [CoreEventType.VERIFICATION_STALE]
    [alert] = [e for e in events if e["event_type"] == CoreEventType.VERIFICATION_STALE]
    assert (alert["participant"], alert["key_type"], alert["last_ok_at"]) == (never, "EVP", None)


async def followers_listed(env: WorkflowEnvironment, followers: set[str]) -> None:
    """`cidsync follow status` shows each follower, as JSON and as a table (visibility lags a moment)."""
    address = ["--temporal-address", env.client.service_client.config.target_host]
    async with asyncio.timeout(30):
        while True:
            listed = await asyncio.to_thread(cidsync, "follow", "status", "--json", *address)
            assert listed.returncode == 0, listed.stderr
            found = {f["workflow_id"]: f for f in json.loads(listed.stdout) if f["workflow_id"] in followers}
            if len(found) == len(followers) and all(f.get("polls", 0) >= 1 for f in found.values()):
                break
            await asyncio.sleep(0.5)
    assert {f["state"] for f in found.values()} <= {"in sync", "checking", "starting", "catching up"}
    assert all(f["events"] == 0 and f["added"] == f["removed"] == 0 for f in found.values())
    table = await asyncio.to_thread(cidsync, "follow", "status", *address)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["participant", "key", "type"]
    participant = next(iter(found.values()))["participant"]
    assert len([r for r in rows if r.startswith(participant)]) == len(followers)
