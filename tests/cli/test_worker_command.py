"""`cidsync worker` started before Temporal answers keeps trying instead of exiting (a restart of the
whole stack, a rolling deploy)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cidsync.devstack.processes import free_port


def test_the_worker_waits_for_temporal_instead_of_exiting(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {**os.environ, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "CIDSYNC_STATE_DIR": str(tmp_path),
           "CIDSYNC_REDIS_URL": "redis://127.0.0.1:1/0", "CIDSYNC_PULSAR_URL": "pulsar://127.0.0.1:1",
           "CIDSYNC_BRIDGE_ADDRESS": "127.0.0.1:1"}  # fmt: skip
    with open(log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "cidsync", "worker", "--log-level", "warning"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count("does not answer") < 2:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.2)
        assert log.read_text().count("does not answer") >= 2, log.read_text()
        assert worker.poll() is None  # still trying
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
