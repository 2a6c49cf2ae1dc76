"""Every role serves /metrics (Temporal's and ours), /healthz and /readyz; JSON logs on request.

The worker and the starter run as their own processes on the session's real servers; the endpoints are
scraped over HTTP the way Prometheus and a Kubernetes probe would.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pulsar
import pytest
from temporalio.testing import WorkflowEnvironment

from cidsync.events import EventType
from cidsync.producer import build_event
from cidsync.topics import Topics
from cidsync_tooling.devstack.processes import free_port, temporal_binary
from cidsync_tooling.synthetic import synthetic_entries
from tests.helpers.eventually import eventually_sync
from tests.helpers.servers import KEY_SECRET, BridgeSimulator, PulsarBroker, RedisServer
from tests.telemetry.test_tracing import role


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample whose labels include `labels`, or None."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            return float(match.group(2))
    return None


def ready(url: str) -> bool:
    return get(f"{url}/readyz")[0] == 200


@pytest.fixture
def environment(
    tmp_path: Path,
    temporal_env: WorkflowEnvironment,
    redis_server: RedisServer,
    pulsar_broker: PulsarBroker,
    bridge_simulator: BridgeSimulator,
    participant: str,
) -> dict[str, str]:
    return {
        **os.environ,
        "CIDSYNC_STATE_DIR": str(tmp_path),
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "CIDSYNC_TASK_QUEUE": f"endpoints-{uuid.uuid4()}",
        "CIDSYNC_PULSAR_URL": pulsar_broker.url,
        "CIDSYNC_PULSAR_NAMESPACE": f"public/endpoints{uuid.uuid4().hex[:10]}",
        "CIDSYNC_REDIS_URL": redis_server.url,
        "CIDSYNC_BRIDGE_ADDRESS": bridge_simulator.address,
        "CIDSYNC_KEY_SECRET": KEY_SECRET.decode(),
        "CIDSYNC_PARTICIPANTS": participant,
        "CIDSYNC_LOG_FORMAT": "json",
    }


def test_the_worker_and_the_starter_serve_metrics_health_and_json_logs(
    tmp_path: Path,
    environment: dict[str, str],
    temporal_env: WorkflowEnvironment,
    pulsar_broker: PulsarBroker,
    participant: str,
) -> None:
    worker_url, starter_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    events = [build_event(EventType.CREATED, entry, "endpoints") for entry in synthetic_entries(5, [participant], 3)]
    (tmp_path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    with (
        role(["worker", "--metrics-bind", worker_url.removeprefix("http://")], environment, tmp_path / "worker.log"),
        role(
            ["starter", "--metrics-bind", starter_url.removeprefix("http://"), "--log-stats-every-s", "1"],
            environment,
            tmp_path / "starter.log",
        ),
    ):
        for url in (worker_url, starter_url):
            eventually_sync(functools.partial(ready, url), f"{url}/readyz says ready")
            assert get(f"{url}/healthz")[0] == 200
            checks = json.loads(get(f"{url}/readyz")[1])["checks"]
            assert {name for name, check in checks.items() if check["required"] and check["ok"]} == {
                "temporal",
                "redis",
                "pulsar",
            }
        published = subprocess.run(
            [sys.executable, "-m", "cidsync", "publish", str(tmp_path / "events.jsonl")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        client = pulsar.Client(pulsar_broker.url)
        try:
            topics = Topics(namespace=environment["CIDSYNC_PULSAR_NAMESPACE"])
            client.create_producer(topics.full(topics.created)).send(b"{not json")
        finally:
            client.close()

        def worker_applied() -> bool:
            return sample(get(f"{worker_url}/metrics")[1], "cidsync_store_changes_total", outcome="applied") == 5

        eventually_sync(worker_applied, "the worker counts 5 applied changes")
        completed = {"workflow_type": "CreateCID"}
        eventually_sync(
            lambda: sample(get(f"{worker_url}/metrics")[1], "temporal_workflow_completed_total", **completed) == 5,
            "Temporal's metrics count 5 runs completed",
        )
        eventually_sync(
            lambda: (
                sample(
                    get(f"{starter_url}/metrics")[1],
                    "cidsync_starter_events_dead_lettered_total",
                    reason="invalid_event",
                )
                == 1
            ),
            "the starter counts the dead letter",
        )
        # A reconciliation of a pair empty on both sides ends OK; the workflow's own counter reaches the endpoint.
        other = f"{uuid.uuid4().int % 10**8:08d}"
        reconciled = subprocess.run(
            [sys.executable, "-m", "cidsync", "reconcile", "--participant", other, "--key-type", "EVP", "--wait"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reconciled.returncode == 0, reconciled.stderr
        eventually_sync(
            lambda: (
                sample(
                    get(f"{worker_url}/metrics")[1],
                    "cidsync_reconciliations_total",
                    participant=other,
                    key_type="EVP",
                    outcome="OK",
                )
                == 1
            ),
            "the reconciliation is counted",
        )
        starter_metrics = get(f"{starter_url}/metrics")[1]
        worker_metrics = get(f"{worker_url}/metrics")[1]
        eventually_sync(
            lambda: "starter counters:" in (tmp_path / "starter.log").read_text(), "the counters are logged"
        )
        described = subprocess.run(
            [
                str(temporal_binary()),
                "task-queue",
                "describe",
                "--task-queue",
                environment["CIDSYNC_TASK_QUEUE"],
                "--legacy-mode",  # pollers of every version (the worker is a versioned one)
                "--address",
                environment["TEMPORAL_ADDRESS"],
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    assert sample(starter_metrics, "cidsync_starter_events_consumed_total", topic="dict.entries.created") == 6
    assert sample(starter_metrics, "cidsync_starter_workflow_starts_total", mode="per_event", result="started") == 5
    assert sample(starter_metrics, "cidsync_starter_start_duration_seconds_count", mode="per_event") == 5
    assert sample(starter_metrics, "temporal_request_total") is not None  # Temporal's, on the same endpoint
    assert sample(worker_metrics, "temporal_workflow_task_execution_latency_milliseconds_count") is not None
    # The invalid one of the six; the other reason's counter at 0 from the start (a series born with its
    # first increment escapes `increase()`).
    assert sample(starter_metrics, "cidsync_starter_events_dead_lettered_total", reason="invalid_event") == 1
    assert sample(starter_metrics, "cidsync_starter_events_dead_lettered_total", reason="redeliveries_exhausted") == 0
    assert sample(starter_metrics, "cidsync_starter_events_retried_total") == 0
    for metrics, dependency in ((starter_metrics, "temporal"), (worker_metrics, "redis")):
        assert sample(metrics, "cidsync_dependency_up", dependency=dependency, required="true") == 1
    assert sample(worker_metrics, "cidsync_dependency_up", dependency="bridge", required="false") is not None
    for key_type in ("CPF", "EVP"):  # never verified, never NOK
        labels = {"participant": participant, "key_type": key_type}
        assert sample(worker_metrics, "cidsync_verification_nok", **labels) == 0
        assert (sample(worker_metrics, "cidsync_verification_seconds_since_proof_seconds", **labels) or -1) >= 0
    for key_type in ("CPF", "EVP"):  # the configured participant's pairs, never verified: since the worker started
        assert (
            sample(
                worker_metrics,
                "cidsync_verification_seconds_since_ok_seconds",
                participant=participant,
                key_type=key_type,
            )
            or -1
        ) >= 0

    identities = set(re.findall(r'"identity":\s*"([^"]+)"', described.stdout))
    assert identities, described.stdout
    assert all(re.fullmatch(r"cidsync-worker/endpoints-[0-9a-f-]+/\d+@.+", i) for i in identities), identities

    lines = [json.loads(line) for line in (tmp_path / "starter.log").read_text().splitlines() if line.startswith("{")]
    counters = [line for line in lines if line["message"].startswith("starter counters:")]
    assert counters[-1]["counters"]["started"] == 5
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)


def test_readiness_fails_while_a_dependency_does_not_answer_and_liveness_does_not(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    environment = {**environment, "CIDSYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing there
    with role(["starter", "--metrics-bind", url.removeprefix("http://")], environment, tmp_path / "starter.log"):
        eventually_sync(
            lambda: (
                json.loads(get(f"{url}/readyz")[1] or "{}")
                .get("checks", {})
                .get("redis", {})
                .get("detail", "not checked yet")
                != "not checked yet"
            ),
            "the starter probes Redis",
        )
        eventually_sync(
            lambda: get(f"{url}/readyz")[0] == 503 and get(f"{url}/healthz")[0] == 200, "not ready, yet alive"
        )
        checks = json.loads(get(f"{url}/readyz")[1])["checks"]
    assert checks["redis"]["ok"] is False
    assert checks["redis"]["detail"].startswith(("ConnectionError", "no answer within"))
    assert checks["temporal"]["ok"] is True
