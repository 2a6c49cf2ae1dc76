"""`cidsync worker` started before Temporal or Redis answers keeps trying instead of exiting (a restart of
the whole stack, a rolling deploy)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from cidsync.devstack.processes import free_port


def waiting(log: Path, waits_for: str) -> int:
    """How many times the worker said it is still waiting for `waits_for`."""
    return sum(1 for line in log.read_text().splitlines() if "does not answer" in line and waits_for in line)


@pytest.mark.parametrize("waits_for", ["Temporal", "Redis"])
def test_the_worker_waits_instead_of_exiting(tmp_path: Path, temporal_env: WorkflowEnvironment, waits_for: str) -> None:
    log = tmp_path / "worker.log"
    running_temporal = temporal_env.client.service_client.config.target_host
    env = {**os.environ, "CIDSYNC_STATE_DIR": str(tmp_path),
           "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}" if waits_for == "Temporal" else running_temporal,
           "CIDSYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "CIDSYNC_PULSAR_URL": "pulsar://127.0.0.1:1",
           "CIDSYNC_BRIDGE_ADDRESS": "127.0.0.1:1"}  # fmt: skip
    with open(log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "cidsync", "worker", "--log-level", "warning"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and waiting(log, waits_for) < 2:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.2)
        assert waiting(log, waits_for) >= 2, log.read_text()
        assert worker.poll() is None  # still trying
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
