"""Rate limits, retries, deadlines and TLS: the client's production behaviour, over real gRPC."""

import asyncio
import sys
from collections.abc import Iterator

import pytest

from cidsync.bridge.client import BridgeClient, ClientTls
from cidsync.bridge.errors import BridgeError, DeadlineExceeded, PermissionDenied, RateLimited, Unavailable
from cidsync.entry import KeyType
from cidsync_tooling.devstack.pki import Pki, make_pki
from cidsync_tooling.devstack.processes import accepts_connections, free_port, launch
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.helpers.servers import BridgeSimulator

KEY_TYPE = KeyType.EMAIL
ZERO = "0" * 64


async def calls(admin: SimulatorAdmin, method: str) -> int:
    return int((await admin.stats())["calls"].get(method, 0))


async def test_rate_limit_is_resource_exhausted_with_retry_after(
    bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    # DICT: sync verification 10 a minute, bucket of 50. The 51st call in a burst is refused.
    async with BridgeClient(bridge_simulator.address) as client:
        for _ in range(50):
            await client.verify_sync(participant, KEY_TYPE, ZERO)
        with pytest.raises(RateLimited) as limited:
            await client.verify_sync(participant, KEY_TYPE, ZERO)
    assert 5.0 < limited.value.retry_after <= 6.0  # one token every 6 s
    assert (await simulator_admin.stats())["rate_limited"]["VerifySync"] >= 1


async def test_unavailable_is_retried_for_idempotent_calls(
    bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    before = await calls(simulator_admin, "VerifySync")
    await simulator_admin.set_faults(fail_next={"VerifySync": 2, "GetCidSetFile": 2})
    async with BridgeClient(bridge_simulator.address) as client:
        assert (await client.verify_sync(participant, KEY_TYPE, ZERO)).ok
    assert await calls(simulator_admin, "VerifySync") - before == 3  # two injected failures, then success


async def test_create_cid_set_file_is_never_retried(
    bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    before = await calls(simulator_admin, "CreateCidSetFile")
    await simulator_admin.set_faults(fail_next={"CreateCidSetFile": 1})
    async with BridgeClient(bridge_simulator.address) as client:
        with pytest.raises(Unavailable):
            await client.create_cid_set_file(participant, KEY_TYPE)
    assert await calls(simulator_admin, "CreateCidSetFile") - before == 1


async def test_retries_give_up_after_max_attempts(
    bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    before = await calls(simulator_admin, "VerifySync")
    await simulator_admin.set_faults(fail_next={"VerifySync": 10})
    async with BridgeClient(bridge_simulator.address, retry_attempts=3) as client:
        with pytest.raises(Unavailable, match="injected fault"):
            await client.verify_sync(participant, KEY_TYPE, ZERO)
    assert await calls(simulator_admin, "VerifySync") - before == 3


async def test_deadline_fires(
    bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await simulator_admin.set_faults(latency_ms=2_000)
    async with BridgeClient(bridge_simulator.address, deadline=0.3) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineExceeded):
            await client.verify_sync(participant, KEY_TYPE, ZERO)
        assert asyncio.get_running_loop().time() - started < 1.9  # it did not wait for the slow answer


# --- TLS, with a CA made here ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_simulator(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second simulator: mutual TLS, and only participant 11111111 may call."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "cidsync",
        "bridge-sim",
        "--port",
        str(port),
        "--participants",
        "11111111",
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--tls-client-ca",
        str(pki.ca),
    ]
    log = tmp_path_factory.mktemp("tls-sim") / "bridge.log"
    launched = launch("bridge-tls", argv, log=log, ready=lambda: accepts_connections(port))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        launched.stop()


async def test_mutual_tls_with_a_test_ca(pki: Pki, tls_simulator: str) -> None:
    tls = ClientTls(ca=pki.ca.read_bytes(), cert=pki.client_cert.read_bytes(), key=pki.client_key.read_bytes())
    async with BridgeClient(tls_simulator, tls=tls) as client:
        assert (await client.verify_sync("11111111", KEY_TYPE, ZERO)).ok
        with pytest.raises(PermissionDenied):
            await client.verify_sync("22222222", KEY_TYPE, ZERO)


async def test_tls_refuses_a_client_without_certificate_or_trust(pki: Pki, tls_simulator: str) -> None:
    no_client_cert = ClientTls(ca=pki.ca.read_bytes())
    async with BridgeClient(tls_simulator, tls=no_client_cert, deadline=5, retry_attempts=2) as client:
        with pytest.raises(BridgeError):
            await client.verify_sync("11111111", KEY_TYPE, ZERO)
    # Without our CA the server's certificate is not trusted.
    untrusted = ClientTls(cert=pki.client_cert.read_bytes(), key=pki.client_key.read_bytes())
    async with BridgeClient(tls_simulator, tls=untrusted, deadline=5, retry_attempts=2) as client:
        with pytest.raises(Unavailable):
            await client.verify_sync("11111111", KEY_TYPE, ZERO)


async def test_plaintext_client_cannot_talk_to_a_tls_server(tls_simulator: str) -> None:
    async with BridgeClient(tls_simulator, deadline=5, retry_attempts=2) as client:
        with pytest.raises(Unavailable):
            await client.verify_sync("11111111", KEY_TYPE, ZERO)


def test_client_tls_from_environment(pki: Pki) -> None:
    env = {
        "CIDSYNC_BRIDGE_TLS_CA": str(pki.ca),
        "CIDSYNC_BRIDGE_TLS_CERT": str(pki.client_cert),
        "CIDSYNC_BRIDGE_TLS_KEY": str(pki.client_key),
        "CIDSYNC_BRIDGE_TLS_SERVER_NAME": "localhost",
    }
    tls = ClientTls.from_env(env)
    assert tls is not None
    assert (tls.ca, tls.server_name) == (pki.ca.read_bytes(), "localhost")
    assert ClientTls.from_env({}) is None
    with pytest.raises(ValueError, match="both"):
        ClientTls.from_env({"CIDSYNC_BRIDGE_TLS_CERT": str(pki.client_cert)})
