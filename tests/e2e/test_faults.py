"""Crashes and outages while events flow: afterwards nothing is lost and nothing is applied twice.

This module runs its own Temporal dev server (with a database file, so it survives a restart) and its
own Redis (AOF on), both restartable on the same ports, plus the worker and the starter as real
`cidsync` processes. Every test checks the final VSyncs against an independent computation: a lost
event or a change applied twice (an XOR done twice) would show.
"""

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pulsar
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from cidsync.core_events import Outcome
from cidsync.entry import KeyType
from cidsync.events import EntryEvent
from cidsync.naming import search_attribute_types
from cidsync.producer import EntryEventProducer
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.topics import Topics
from cidsync_tooling.devstack.processes import Launched, free_port, launch
from cidsync_tooling.devstack.servers import redis_answers, start_redis, start_temporal, temporal_argv
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from starters.followers import ensure_follower
from starters.reconciliation import start_reconciliation
from tests.e2e.harness import (
    NACK_DELAY,
    expected_vsyncs,
    history_events,
    local_vsyncs,
    unique_participants,
    wait_for_vsyncs,
)
from tests.e2e.reconciliation import apply_locally, pair_entries
from tests.helpers.servers import BridgeSimulator, PulsarBroker
from workflows.follow_cid_events import FollowCIDEvents, FollowInput
from workflows.reconcile_vsync import ReconcileInput

SECRET = "faults-secret"
WAITING_PERIOD_DAYS = 2 / 86_400  # two seconds
# The module's tests share one stack: runs a test terminated on purpose are not another test's failure.
TERMINATED_BY_TESTS: set[str] = set()


@dataclass
class FaultStack:
    root: Path
    pulsar_url: str
    bridge_address: str
    temporal_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    namespace: str = field(default_factory=lambda: f"public/faults{uuid.uuid4().hex[:10]}")
    processes: dict[str, Launched] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def env(self) -> dict[str, str]:
        return {
            "TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "CIDSYNC_REDIS_URL": self.redis_url,
            "CIDSYNC_PULSAR_URL": self.pulsar_url,
            "CIDSYNC_PULSAR_NAMESPACE": self.namespace,
            "CIDSYNC_BRIDGE_ADDRESS": self.bridge_address,
            "CIDSYNC_TASK_QUEUE": "faults",
            "CIDSYNC_KEY_SECRET": SECRET,
            "CIDSYNC_WAITING_PERIOD_DAYS": str(WAITING_PERIOD_DAYS),
            "CIDSYNC_STATE_DIR": str(self.root / "no-dev-stack"),
            "CIDSYNC_LOG_FORMAT": "json",  # one line per record, with the event id where there is one
        }

    def start_temporal(self) -> None:
        argv = temporal_argv(
            port=self.temporal_port,
            ui_port=None,
            namespace="default",
            db_filename=self.root / "temporal.db",
            log_level="error",
            dynamic_config={},
            search_attributes=search_attribute_types(),
        )
        self.processes["temporal"] = start_temporal(
            argv=argv, port=self.temporal_port, namespace="default", log=self.root / "temporal.log"
        )

    def start_redis(self) -> None:
        self.processes["redis"] = start_redis(
            port=self.redis_port, data_dir=self.root / "redis", appendonly=True, log=self.root / "redis.log"
        )

    def start_role(self, role: str) -> None:
        argv = [sys.executable, "-m", "cidsync", role, "--log-level", "warning"]
        if role == "starter":
            argv += ["--nack-delay-s", f"{NACK_DELAY.total_seconds():g}"]  # as the harness's starter
        self.processes[role] = launch(role, argv, log=self.root / f"{role}.log", ready=lambda: True, env=self.env)

    def stop(self, name: str) -> None:
        self.processes.pop(name).stop()

    def kill(self, name: str) -> int:
        """SIGKILL the role's process group; returns the pid that was killed."""
        launched = self.processes.pop(name)
        os.killpg(launched.process.pid, signal.SIGKILL)
        launched.process.wait(timeout=10)
        return launched.process.pid

    def stop_all(self) -> None:
        for name in ("starter", "worker", "temporal", "redis"):
            if name in self.processes:
                self.stop(name)


@pytest.fixture(scope="module")
def stack(
    pulsar_broker: PulsarBroker, bridge_simulator: BridgeSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultStack]:
    stack = FaultStack(tmp_path_factory.mktemp("faults"), pulsar_broker.url, bridge_simulator.address)
    stack.start_redis()
    stack.start_temporal()
    stack.start_role("worker")
    stack.start_role("starter")
    try:
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture
async def store(stack: FaultStack) -> AsyncIterator[CIDStore]:
    client = redis_client(stack.redis_url)
    try:
        yield CIDStore(client, SECRET.encode())
    finally:
        await client.aclose()


async def publish(stack: FaultStack, count: int, participants: list[str]) -> list[EntryEvent]:
    events = history_events(count, participants, seed=uuid.uuid4().int % 10_000)
    async with EntryEventProducer(
        pulsar_client(stack.pulsar_url), topics=Topics(namespace=stack.namespace), owns_client=True
    ) as producer:
        await producer.start()
        await asyncio.gather(*(producer.publish_event(e) for e in events))
    return events


@contextlib.asynccontextmanager
async def still_flowing(stack: FaultStack, events: list[EntryEvent], every: float = 5.0) -> AsyncIterator[None]:
    """Traffic that goes on, as core's does: a duplicate of a published event every few seconds (no effect:
    its mark is set). A quiet topic is where pulsar-lite's redelivery quirks showed (docs/stack.md); the
    stack's Shared subscription redelivers every nack, and production's topics never go quiet either."""

    async def send() -> None:
        async with EntryEventProducer(
            pulsar_client(stack.pulsar_url), topics=Topics(namespace=stack.namespace), owns_client=True
        ) as producer:
            await producer.start()
            for event in itertools.cycle(events):
                await asyncio.sleep(every)
                await producer.publish_event(event)

    sending = asyncio.ensure_future(send())
    try:
        yield
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending


async def some_progress(store: CIDStore, participants: list[str]) -> None:
    async with asyncio.timeout(60):
        while not await local_vsyncs(store, participants):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def no_failed_workflows(stack: FaultStack) -> None:
    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}", data_converter=pydantic_data_converter)
    failed = [
        f"{run.id} {run.status.name if run.status else '?'}"
        async for run in client.list_workflows('ExecutionStatus="Failed" OR ExecutionStatus="Terminated"')
        if run.id not in TERMINATED_BY_TESTS
    ]
    assert not failed, failed


async def test_worker_killed_mid_run_and_restarted(stack: FaultStack, store: CIDStore) -> None:
    participants = unique_participants(2)
    events = await publish(stack, 300, participants)
    await some_progress(store, participants)
    killed = stack.kill("worker")  # SIGKILL: no graceful shutdown, activities die mid-flight
    assert not psutil.pid_exists(killed)
    assert await local_vsyncs(store, participants) != expected_vsyncs(events), "the kill came too late to test"
    stack.start_role("worker")
    await wait_for_vsyncs(store, participants, expected_vsyncs(events))
    await no_failed_workflows(stack)


async def test_temporal_stopped_for_10_seconds_while_events_flow(stack: FaultStack, store: CIDStore) -> None:
    participants = unique_participants(2)
    first = await publish(stack, 100, participants)
    await some_progress(store, participants)  # the starter is consuming (the stack may have just started)
    stack.stop("temporal")
    # Events keep coming while Temporal is down: the starter must nack them, not drop them.
    during = await publish(stack, 100, participants)
    await asyncio.sleep(10)
    stack.start_temporal()
    async with still_flowing(stack, first):
        await wait_for_vsyncs(store, participants, expected_vsyncs([*first, *during]))
    await no_failed_workflows(stack)
    # Each nack is logged with the event it was about, so an operator can follow one event through an outage.
    lines = [json.loads(line) for line in (stack.root / "starter.log").read_text().splitlines() if line.startswith("{")]
    retried = [line for line in lines if line["message"].startswith("transient failure")]
    assert retried
    assert {line["event_id"] for line in retried} <= {str(e.event_id) for e in [*first, *during]}


async def test_redis_restarted_while_events_flow(stack: FaultStack, store: CIDStore) -> None:
    participants = unique_participants(2)
    events = await publish(stack, 200, participants)
    await some_progress(store, participants)
    stack.stop("redis")
    await asyncio.sleep(3)
    assert not redis_answers(stack.redis_port)
    stack.start_redis()  # AOF on: what was applied before is still there
    await wait_for_vsyncs(store, participants, expected_vsyncs(events))
    await no_failed_workflows(stack)


async def test_worker_killed_while_the_cid_file_streams_resumes_without_a_second_file(
    stack: FaultStack, store: CIDStore, simulator_admin: SimulatorAdmin
) -> None:
    participant = unique_participants(1)[0]
    # 20,000 CIDs, 20 pages, each page held back 150 ms: the stream lasts ~3 s, long enough to kill it.
    await simulator_admin.load_synthetic(participant, KeyType.EVP, 20_000, seed=42)
    await apply_locally(store, pair_entries(participant, KeyType.EVP, 20_000, seed=42))
    await simulator_admin.diverge(participant, KeyType.EVP, add=3, remove=3, seed=1)
    await simulator_admin.set_faults(page_delay_ms=150)
    before = await simulator_admin.stats()
    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}", data_converter=pydantic_data_converter)
    request = ReconcileInput(
        participant=participant,
        key_type=KeyType.EVP,
        poll_initial=timedelta(seconds=0.3),
        activity_heartbeat=timedelta(seconds=3),
        grace=timedelta(seconds=1),
    )
    handle = await start_reconciliation(client, request, "faults")

    async with asyncio.timeout(60):
        while not await streaming_with_progress(handle):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    stack.kill("worker")  # SIGKILL mid-stream: the attempt dies without a word
    stack.start_role("worker")
    result = await handle.result()

    after = await simulator_admin.stats()
    assert result.outcome is Outcome.REPAIRED
    assert (result.added, result.removed) == (3, 3)
    assert after["files_created"] - before["files_created"] == 1
    assert after["calls"]["CreateCidSetFile"] - before["calls"].get("CreateCidSetFile", 0) == 1
    assert after["calls"]["StreamCIDList"] - before["calls"].get("StreamCIDList", 0) >= 2  # resumed
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the stream's retry is what finished the job


async def streaming_with_progress(handle: WorkflowHandle[Any, Any]) -> bool:
    """True once the stream activity has reported a stored page."""
    description = await handle.describe()
    return any(
        pending.activity_type.name == "stream_cid_file" and pending.heartbeat_details.payloads
        for pending in description.raw_description.pending_activities
    )


async def test_worker_killed_while_following_resumes_from_the_cursor_and_repairs_each_cid_once(
    stack: FaultStack, store: CIDStore, simulator_admin: SimulatorAdmin
) -> None:
    participant = unique_participants(1)[0]
    entries = pair_entries(participant, KeyType.EVP, 40, seed=5)
    await simulator_admin.load(entries)
    await apply_locally(store, entries)
    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}", data_converter=pydantic_data_converter)
    pulsar_ = pulsar_client(stack.pulsar_url)
    topics = Topics(namespace=stack.namespace)
    core = await pulsar_.subscribe(
        topics.full(topics.core_events), f"core-{uuid.uuid4()}", initial_position=pulsar.InitialPosition.Earliest
    )
    request = FollowInput(
        participant=participant,
        key_type=KeyType.EVP,
        grace=timedelta(seconds=1),
        poll_interval=timedelta(seconds=0.5),
        idle_interval=timedelta(seconds=1),
        activity_heartbeat=timedelta(seconds=2),
    )
    workflow_id, _ = await ensure_follower(client, request, "faults")
    handle = client.get_workflow_handle_for(FollowCIDEvents.run, workflow_id)
    try:
        await follower_reaches(handle, lambda s: s.state == "in sync")
        files_before = (await simulator_admin.stats())["files_created"]
        await simulator_admin.set_faults(latency_ms=1_000)  # every DICT call takes a second: a long repair
        await simulator_admin.diverge(participant, KeyType.EVP, add=4, remove=3, alter=2, seed=11)
        async with asyncio.timeout(60):
            while not await pending(handle, "repair_suspects"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        stack.kill("worker")  # SIGKILL mid-repair: some CIDs repaired, their notices in the outbox, no result
        stack.start_role("worker")
        await simulator_admin.set_faults()
        status = await follower_reaches(handle, lambda s: s.state == "in sync" and s.added == 6)
        notices = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):  # everything published, and then some time for any duplicate
                while True:
                    message = await core.receive()
                    await core.acknowledge(message)
                    notices.append(json.loads(message.data()))
        files_after = (await simulator_admin.stats())["files_created"]
        local = await store.view.vsync(participant, KeyType.EVP)
        history = await handle.fetch_history()
    finally:
        TERMINATED_BY_TESTS.add(workflow_id)  # a follower runs forever: the test ends it
        await handle.terminate("test over")
        await pulsar_.close()

    assert status.events == 4 + 3 + 2 * 2  # DICT's changes, each read once across the crash
    # Each DICT change repaired exactly once: 4 added and 2 altered (new CID added, old one then agrees),
    # 3 removed, whichever attempt did the work; core hears of each, with one event id per repair.
    # The retried attempt counts an addition the killed one made as added (the key holds the CID), and a
    # removal it made as vanished (nothing left to remove); the two altered entries' old CIDs vanish too.
    assert status.added == 6
    assert status.removed + status.vanished == 3 + 2
    ours = [n for n in notices if n["reconciliation_id"].startswith(workflow_id)]  # the topic is the module's
    assert len({(n["event_type"], n["cid"]) for n in ours}) == 9, ours
    assert len({n["event_id"] for n in ours}) == 9  # a notice published twice carries the same id
    assert (await simulator_admin.stats())["files_created"] == files_before == files_after
    assert local == status.dict_vsync
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the killed repair's retry finished the job


async def follower_reaches(handle: WorkflowHandle[Any, Any], check: Any) -> Any:
    async with asyncio.timeout(90):
        while not check(status := await handle.query(FollowCIDEvents.status)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return status


async def pending(handle: WorkflowHandle[Any, Any], activity_type: str) -> bool:
    description = await handle.describe()
    return any(p.activity_type.name == activity_type for p in description.raw_description.pending_activities)
