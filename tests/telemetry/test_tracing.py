"""One event, one connected trace: from the producer's send to the Redis apply, through real processes.

`cidsync publish`, `cidsync starter` and `cidsync worker` run as their own processes on the session's real
servers, configured by the `OTEL_*` variables only, and export to an OTLP receiver in this process (one
test per protocol). The trace is then walked from the apply span up to the producer's span.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from cidsync.entry import Entry, KeyType
from cidsync.events import EventType
from cidsync.producer import build_event
from cidsync_tooling.synthetic import synthetic_entry
from tests.helpers.servers import KEY_SECRET, BridgeSimulator, PulsarBroker, RedisServer
from tests.telemetry.otlp_receiver import ReceivedSpan, grpc_receiver, http_receiver


@contextmanager
def role(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A role as its own process; stopped with SIGTERM (so it flushes its spans) at the end."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cidsync", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def chain(spans: list[ReceivedSpan], last: ReceivedSpan) -> list[ReceivedSpan] | None:
    """From `last` up through its parents to the root of its trace; None while a parent is missing."""
    by_id = {s.span_id: s for s in spans if s.trace_id == last.trace_id}
    found = [last]
    while found[-1].parent_id:
        if (parent := by_id.get(found[-1].parent_id)) is None:
            return None
        found.append(parent)
    return found[::-1]


def complete(spans: list[ReceivedSpan], apply_name: str) -> bool:
    """The apply span and every span above it have arrived (each process exports on its own schedule),
    and so have the producer's and the run's completion (the worker exports it after the apply's, in a
    later batch when the machine is busy)."""
    applies = [s for s in spans if s.name == apply_name]
    sent = any(s.service == "cidsync-publish" for s in spans)
    completed = any(s.name.startswith("CompleteWorkflow:") for s in spans)
    return sent and completed and bool(applies) and chain(spans, applies[0]) is not None


def personal_values(entry: Entry) -> list[str]:
    return [v for v in (entry.key, entry.owner_name, entry.owner_tax_id, entry.account_number) if v]


@pytest.mark.parametrize(
    ("mode", "protocol"), [("per-event", "http/protobuf"), ("batch", "grpc")], ids=["per-event-http", "batch-grpc"]
)
def test_one_event_is_one_connected_trace_from_the_producer_to_the_redis_apply(
    tmp_path: Path,
    temporal_env: WorkflowEnvironment,
    redis_server: RedisServer,
    pulsar_broker: PulsarBroker,
    bridge_simulator: BridgeSimulator,
    participant: str,
    mode: str,
    protocol: str,
) -> None:
    entry = synthetic_entry(random.Random(7), participant, KeyType.EMAIL)
    event = build_event(EventType.CREATED, entry, "trace-test")
    (tmp_path / "event.json").write_text(event.to_json())
    receiver = http_receiver() if protocol == "http/protobuf" else grpc_receiver()
    with ExitStack() as stack:
        endpoint, received = stack.enter_context(receiver)
        env = {
            **os.environ,
            "CIDSYNC_STATE_DIR": str(tmp_path),
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "CIDSYNC_TASK_QUEUE": f"trace-{uuid.uuid4()}",
            "CIDSYNC_PULSAR_URL": pulsar_broker.url,
            "CIDSYNC_PULSAR_NAMESPACE": f"public/trace{uuid.uuid4().hex[:10]}",
            "CIDSYNC_REDIS_URL": redis_server.url,
            "CIDSYNC_BRIDGE_ADDRESS": bridge_simulator.address,
            "CIDSYNC_KEY_SECRET": KEY_SECRET.decode(),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        stack.enter_context(role(["worker"], env, tmp_path / "worker.log"))
        stack.enter_context(
            role(["starter", "--mode", mode, "--batch-max-wait-ms", "100"], env, tmp_path / "starter.log")
        )
        published = subprocess.run(
            [sys.executable, "-m", "cidsync", "publish", str(tmp_path / "event.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        apply_name = "redis apply" if mode == "per-event" else "redis apply batch"
        spans = received.wait_for(lambda got: complete(got, apply_name))

    send = next(s for s in spans if s.service == "cidsync-publish" and s.name.startswith("send "))
    assert send.attributes["cidsync.event_id"] == str(event.event_id)
    process = next(s for s in spans if s.service == "cidsync-starter" and s.name.startswith("process "))
    assert (process.trace_id, process.parent_id) == (send.trace_id, send.span_id)  # continued from the message
    apply = next(s for s in spans if s.name == apply_name)
    path = chain(spans, apply)
    assert path is not None
    names = [(s.service, s.name) for s in path]
    if mode == "per-event":
        assert names == [
            ("cidsync-publish", send.name),
            ("cidsync-starter", process.name),
            ("cidsync-starter", "StartWorkflow:CreateCID"),
            ("cidsync-worker", "StartActivity:apply_cid_change"),
            ("cidsync-worker", "RunActivity:apply_cid_change"),
            ("cidsync-worker", "redis apply"),
        ]
        assert apply.attributes["cidsync.outcome"] == "applied"
        assert apply.attributes["cidsync.event_id"] == str(event.event_id)
    else:
        # One run serves many events: its trace starts at the starter's batch span, linked to each event's.
        assert names[:2] == [("cidsync-starter", "start batch"), ("cidsync-starter", "StartWorkflow:ApplyCIDBatch")]
        assert names[-1] == ("cidsync-worker", "redis apply batch")
        assert path[0].links == ((process.trace_id, process.span_id),)
        assert apply.attributes["cidsync.applied"] == 1
    # The SDK's interceptor makes the run's own spans children of the start, beside the activity's.
    start = path[2] if mode == "per-event" else path[1]
    workflow = start.name.split(":")[1]
    assert {s.name for s in spans if s.parent_id == start.span_id} >= {
        f"RunWorkflow:{workflow}",
        f"CompleteWorkflow:{workflow}",
    }
    leaked = [
        (s.name, value)
        for s in spans
        for value in personal_values(entry)
        if value in s.name or any(value in str(v) for v in s.attributes.values())
    ]
    assert leaked == []
