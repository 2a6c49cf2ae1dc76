"""`cidsync bridge serve` as its own process, as a participant runs it: mutual TLS on its gRPC port, the
worker's Bridge client in front, the simulator's DICT API (its own process) behind; a bad setting stops it
before it listens, one line per problem, exit 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cidsync.bridge.client import BridgeClient, ClientTls
from cidsync.entry import KeyType
from cidsync_tooling.devstack.processes import free_port
from cidsync_tooling.devstack.servers import start_bridge_serve
from tests.dict_api.conftest import DictApiSimulator
from tests.dict_api.test_dict_check import dict_env
from tests.helpers.cli_runner import cidsync
from tests.helpers.servers import RedisServer

PARTICIPANT = "60701190"


@pytest.fixture
def bridge_serve(dict_api_simulator: DictApiSimulator, redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """`cidsync bridge serve` with mutual TLS on a free port: the port."""
    pki = dict_api_simulator.pki
    port = free_port()
    launched = start_bridge_serve(
        port=port,
        pki=pki,
        dict_api_port=dict_api_simulator.api_port,
        spool_dir=tmp_path / "spool",
        log=tmp_path / "bridge.log",
        env={
            "CIDSYNC_REDIS_URL": redis_server.url,
            "CIDSYNC_BRIDGE_TLS_SERVER_CERT": str(pki.server_cert),
            "CIDSYNC_BRIDGE_TLS_SERVER_KEY": str(pki.server_key),
            "CIDSYNC_BRIDGE_TLS_CLIENT_CA": str(pki.ca),
        },
    )
    try:
        yield port
    finally:
        launched.stop()


async def test_the_worker_reaches_dict_through_bridge_serve_over_mutual_tls(
    bridge_serve: int, dict_api_simulator: DictApiSimulator
) -> None:
    pki = dict_api_simulator.pki
    tls = ClientTls(
        ca=pki.ca.read_bytes(), cert=pki.participant_cert.read_bytes(), key=pki.participant_key.read_bytes()
    )
    async with BridgeClient(f"127.0.0.1:{bridge_serve}", tls=tls) as client:
        await _calls(client)


async def _calls(bridge_serve: BridgeClient) -> None:
    assert (await bridge_serve.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)).ok  # an empty pair's VSync
    assert not (await bridge_serve.verify_sync(PARTICIPANT, KeyType.EVP, "1" * 64)).ok
    bucket = await bridge_serve.get_rate_limit_bucket(PARTICIPANT, "VerifySync")
    assert (bucket.policy, bucket.capacity) == ("SYNC_VERIFICATIONS_WRITE", 50)


def test_a_bad_setting_stops_it_before_it_listens_one_line_each_exit_2(
    dict_api_simulator: DictApiSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = dict_env(
        dict_api_simulator,
        CIDSYNC_REDIS_URL=redis_server.url,
        CIDSYNC_DICT_CLIENT_KEY=str(tmp_path / "missing.key"),
        CIDSYNC_BRIDGE_TLS_SERVER_CERT=str(tmp_path / "missing.pem"),
    )
    result = cidsync("bridge", "serve", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert (
        f"CIDSYNC_DICT_CLIENT_KEY: cannot read {tmp_path / 'missing.key'}: No such file or directory" in result.stderr
    )
