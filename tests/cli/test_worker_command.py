"""`cidsync worker` and `cidsync starter` started before Temporal or Redis answers keep trying instead of
exiting (a restart of the whole stack, a rolling deploy), and a SIGTERM while they wait stops them at once
(it used to be ignored until the 5-minute wait ran out, then a traceback)."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.helpers.servers import KEY_SECRET


@contextmanager
def unserved_port() -> Iterator[int]:
    """A loopback port held bound but not listening while the test runs: connections to it are refused,
    and no other test's server can take it (a port from `free_port` once went to a parallel test's
    server, which answered the worker's Redis client with bytes it could not parse, and the worker exited)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def waiting(log: Path, waits_for: str) -> int:
    """How many times the worker said it is still waiting for `waits_for`."""
    return sum(1 for line in log.read_text().splitlines() if "does not answer" in line and waits_for in line)


@pytest.mark.parametrize("role", ["worker", "starter"])
@pytest.mark.parametrize("waits_for", ["Temporal", "Redis"])
def test_a_role_waits_instead_of_exiting_and_a_stop_ends_the_wait(
    tmp_path: Path, temporal_env: WorkflowEnvironment, waits_for: str, role: str
) -> None:
    with unserved_port() as temporal_port, unserved_port() as redis_port:
        waits_and_stops(tmp_path, temporal_env, waits_for, role, temporal_port, redis_port)


def waits_and_stops(
    tmp_path: Path, temporal_env: WorkflowEnvironment, waits_for: str, role: str, temporal_port: int, redis_port: int
) -> None:
    log = tmp_path / f"{role}.log"
    running_temporal = temporal_env.client.service_client.config.target_host
    env = {
        **os.environ,
        "CIDSYNC_STATE_DIR": str(tmp_path),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}" if waits_for == "Temporal" else running_temporal,
        "CIDSYNC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CIDSYNC_PULSAR_URL": "pulsar://127.0.0.1:1",
        "CIDSYNC_BRIDGE_ADDRESS": "127.0.0.1:1",
        "CIDSYNC_KEY_SECRET": KEY_SECRET.decode(),
    }
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cidsync", role, "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and waiting(log, waits_for) < 2:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        assert waiting(log, waits_for) >= 2, log.read_text()
        assert process.poll() is None  # still trying
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
        assert time.monotonic() - stopped_at < 5  # not at the end of the next backoff of up to 10 s
        assert f"stopped while waiting for {waits_for}" in log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.parametrize("role", ["worker", "starter"])
def test_a_role_without_a_key_secret_refuses_to_start_at_once(tmp_path: Path, role: str) -> None:
    """Outside the dev stack (which sets the development secret) a role never falls back to it: it would
    hash keys as no other role of the installation does. It says so before waiting for any dependency."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "CIDSYNC_KEY_SECRET"},
        "CIDSYNC_STATE_DIR": str(tmp_path),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
        "CIDSYNC_REDIS_URL": "redis://127.0.0.1:1/0",
        "CIDSYNC_PULSAR_URL": "pulsar://127.0.0.1:1",
        "CIDSYNC_BRIDGE_ADDRESS": "127.0.0.1:1",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "cidsync", role], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert "CIDSYNC_KEY_SECRET" in refused.stderr
    assert "not set" in refused.stderr
