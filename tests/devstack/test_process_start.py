"""A running dev stack stays found when the machine's clock is stepped.

A CI machine's clock was stepped mid-run: every command then found no endpoints of its running stack ("no
redis url") and four tests failed. The identity of a server is its start counted from boot, which a step
does not move; these tests step psutil's idea of the boot time (what a clock step moves) and read again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cidsync.config import LOCAL_ENDPOINTS_FILE, dev_stack_endpoints
from cidsync.process_start import from_wall_clock, started, still_running
from cidsync_tooling.devstack.processes import ProcessRef
from cidsync_tooling.devstack.stack import ServiceState

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the start from boot is read from /proc")


@pytest.fixture
def child() -> Iterator[psutil.Process]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield psutil.Process(process.pid)
    finally:
        process.kill()
        process.wait()


def step_the_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """What a step of the wall clock does to psutil: the boot time it adds to every start moves."""
    from psutil import _pslinux

    moved = psutil.boot_time() + seconds
    monkeypatch.setattr(_pslinux, "boot_time", lambda: moved)
    monkeypatch.setattr(psutil, "boot_time", lambda: moved)


def test_the_start_from_boot_is_psutils_start_less_the_boot_time(child: psutil.Process) -> None:
    assert started(child.pid) == pytest.approx(child.create_time() - psutil.boot_time(), abs=0.011)


def test_a_process_is_still_itself_after_the_clock_is_stepped(
    child: psutil.Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, wall_clock_start = ProcessRef(child.pid, started(child.pid)), child.create_time()
    step_the_clock(monkeypatch, 2.0)
    assert psutil.Process(child.pid).create_time() == pytest.approx(wall_clock_start + 2.0)  # what broke it
    assert ref.alive()


def test_a_published_endpoint_is_found_after_the_clock_is_stepped(
    child: psutil.Process, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    published = {"redis_url": {"value": "redis://127.0.0.1:1", "pid": child.pid, "started": started(child.pid)}}
    (tmp_path / LOCAL_ENDPOINTS_FILE).write_text(json.dumps(published))
    step_the_clock(monkeypatch, -3.0)
    assert dev_stack_endpoints({"CIDSYNC_STATE_DIR": str(tmp_path)}) == {"redis_url": "redis://127.0.0.1:1"}


def test_a_process_that_ended_or_another_with_its_pid_is_not_the_one_recorded(child: psutil.Process) -> None:
    start = started(child.pid)
    assert not still_running(child.pid, start - 1.0)  # a later process with the same pid
    assert not still_running(os.getpid(), start)
    child.kill()
    child.wait()
    assert not still_running(child.pid, start)


def test_a_stack_recorded_by_an_earlier_cidsync_can_still_be_stopped(child: psutil.Process) -> None:
    """state.json written before this change holds `create_time`; `dev down` must still find its servers."""
    state = ServiceState.model_validate({"pid": child.pid, "create_time": child.create_time(), "log": "", "ports": {}})
    assert state.started == pytest.approx(from_wall_clock(child.create_time()))
    assert state.ref.alive()
