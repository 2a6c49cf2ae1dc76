"""`cidsync bridge serve` as its own process, as a participant runs it: mutual TLS on its gRPC port, the
worker's Bridge client in front, the simulator's DICT API (its own process) behind; a bad setting stops it
before it listens, one line per problem, exit 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cidsync.bridge.client import BridgeClient, ClientTls
from cidsync.bridge.v2 import bridge_pb2 as pb
from cidsync.bridge.v2 import bridge_pb2_grpc
from cidsync.entry import KeyType
from cidsync_tooling.devstack.processes import free_port
from cidsync_tooling.devstack.servers import start_bridge_serve
from tests.dict_api.conftest import DictApiSimulator
from tests.dict_api.test_dict_check import dict_env
from tests.helpers.cli_runner import cidsync
from tests.helpers.servers import RedisServer
from tests.telemetry.otlp_receiver import http_receiver

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


def test_bridge_serve_continues_the_workers_trace_to_each_dict_call(
    dict_api_simulator: DictApiSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A call carrying the worker's `traceparent` gets a server span in that trace, and each DICT call under
    it a client span of its own, with ids only (never a key or a name: GetEntryByCid returns both)."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with http_receiver() as (endpoint, received):
        launched = start_bridge_serve(
            port=(port := free_port()),
            pki=dict_api_simulator.pki,
            dict_api_port=dict_api_simulator.api_port,
            spool_dir=tmp_path / "spool",
            log=tmp_path / "bridge.log",
            env={
                "CIDSYNC_REDIS_URL": redis_server.url,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
        )
        try:
            metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = bridge_pb2_grpc.DictBridgeStub(channel)
                request = pb.VerifySyncRequest(
                    participant=PARTICIPANT, key_type=pb.KEY_TYPE_EVP, participant_vsync="0" * 64
                )
                reply = stub.VerifySync(request, metadata=metadata, timeout=30)
                assert reply.result == pb.VERIFICATION_RESULT_OK
        finally:
            launched.stop()  # SIGTERM: it flushes its spans
        spans = received.wait_for(lambda got: any(s.name.startswith("DICT ") for s in got))
    server = next(s for s in spans if s.name == "cidsync.bridge.v2.DictBridge/VerifySync")
    assert (server.service, server.trace_id, server.parent_id) == ("cidsync-bridge", trace_id, parent_id)
    dict_call = next(s for s in spans if s.name == "DICT createSyncVerification")
    assert (dict_call.trace_id, dict_call.parent_id) == (trace_id, server.span_id)
    assert dict_call.attributes == {
        "dict.operation": "createSyncVerification",
        "cidsync.participant": PARTICIPANT,
        "http.request.method": "POST",
    }
