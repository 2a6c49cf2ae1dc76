"""The real servers the tests start (on free ports, stopped afterwards), as the dev stack launches them.

`tests/conftest.py` turns these into session fixtures; a test that needs a server's address types it
with these classes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from cidsync_tooling.devstack.pki import DictPki, make_dict_pki
from cidsync_tooling.devstack.processes import Launched, accepts_connections, free_cluster_port, free_port
from cidsync_tooling.devstack.servers import (
    cluster_ok,
    dynamic_config_argv,
    form_cluster,
    start_bridge_serve,
    start_bridge_simulator,
    start_redis,
)
from cidsync_tooling.devstack.spec import load_spec

# The dev stack's dynamic config (temporal-dev.yaml): server-side time skipping, and timers read without the
# timer queue's 1 s time shift, with which every skipped timer waited a real second (docs/stack.md).
DEV_STACK_FILE = Path(__file__).resolve().parents[2] / "temporal-dev.yaml"  # what `make demo` starts
TIME_SKIPPING_FLAG = dynamic_config_argv(load_spec(DEV_STACK_FILE).temporal.dynamic_config)
# Every role that checks the key secret against the session's Redis uses this one (a store knows one).
KEY_SECRET = b"cidsync-tests-key-secret"


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


class RedisClusterServers:
    """Three primaries of a Redis Cluster, from the same redis-server binary, with AOF (a node killed and
    started again keeps its data and its slots, as a production primary without replicas would)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports: list[int] = []
        for _ in range(3):
            self.ports.append(free_cluster_port(self.ports))
        self.nodes = [self._start(port) for port in self.ports]
        form_cluster(self.ports)

    def _start(self, port: int) -> Launched:
        where = self.root / str(port)
        return start_redis(port=port, data_dir=where, appendonly=True, log=where / "redis.log", cluster=True)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def kill(self, index: int) -> None:
        """SIGKILL one primary: its slots are unserved until it is back (no replica takes over)."""
        process = self.nodes[index].process
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, index: int, timeout: float = 30.0) -> None:
        self.nodes[index] = self._start(self.ports[index])
        deadline = time.monotonic() + timeout
        while not all(cluster_ok(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not come back ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass(frozen=True)
class BridgeSimulator:
    """The DICT simulator: the Bridge contract and the admin calls on `port`, DICT API v2 on `api_port`
    with the certificates of `pki`."""

    port: int
    api_port: int
    pki: DictPki

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class BridgeChain:
    """`cidsync bridge serve` on `port`, in front of a simulator's DICT API v2: the Bridge as a participant
    runs it, which the reconciliation and follower tests' workers call."""

    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# Fast files for tests; DICT's real rate limits at real speed (each test uses its own participant).
SIMULATOR_FILE_DELAY = 0.2


def launch_simulator(
    root: Path, *, file_delay: float = SIMULATOR_FILE_DELAY, **delays: float
) -> tuple[Launched, BridgeSimulator]:
    """`cidsync bridge-sim` in memory, serving DICT API v2 with a throwaway PKI made in `root`; `delays`
    are its DICT-like delays (`file_delay_per_cid_ms`, `event_delay`, `event_jitter`)."""
    pki = make_dict_pki(root)
    port, api_port = free_port(), free_port()
    launched = start_bridge_simulator(
        port=port,
        data_dir=None,
        seed_file=None,
        file_delay=file_delay,
        time_scale=1.0,
        rate_limits=True,
        log=root / "simulator.log",
        extra_args=pki.simulator_flags(api_port),
        also_ready=lambda: accepts_connections(api_port),
        **delays,
    )
    return launched, BridgeSimulator(port, api_port, pki)


def launch_bridge_chain(simulator: BridgeSimulator, redis_url: str, root: Path) -> tuple[Launched, BridgeChain]:
    """`cidsync bridge serve` on a free port in front of `simulator`'s DICT API v2, its file requests in
    `redis_url`, its spool in `root`."""
    port = free_port()
    launched = start_bridge_serve(
        port=port,
        pki=simulator.pki,
        dict_api_port=simulator.api_port,
        spool_dir=root / "spool",
        log=root / "bridge-serve.log",
        env={"CIDSYNC_REDIS_URL": redis_url},
    )
    return launched, BridgeChain(port)


async def namespace_ready(env: WorkflowEnvironment) -> None:
    """Wait until the namespace exists: the dev server accepts connections a moment before it has
    registered `default`, and a worker started in that moment fails with "Namespace ... is not found"."""
    request = DescribeNamespaceRequest(namespace=env.client.namespace)
    async with asyncio.timeout(60):
        while True:
            try:
                await env.client.workflow_service.describe_namespace(request)
                return
            except RPCError as error:
                if error.status is not RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.1)
