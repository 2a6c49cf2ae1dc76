"""TLS and authentication for Temporal, Redis and Pulsar, configured by the environment alone.

Redis ACLs are the real server's. TLS runs through a TLS terminator in front of the real servers where they
cannot speak it themselves (`tests/tls_proxy.py` says why), so the client's certificate checks are real.
Pulsar's TLS and token settings are checked at the configuration level and by a real client built with
them: pulsar-lite has neither TLS nor authentication (docs/stack.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pulsar
import pytest
from redis.exceptions import AuthenticationError, ConnectionError
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from cidsync.config import Settings
from cidsync.errors import InvalidInput
from cidsync.pulsar_client import pulsar_client, pulsar_options
from cidsync.redis_client import redis_client, redis_options
from cidsync.temporal_client import connect
from cidsync_tooling.devstack.pki import Pki, make_pki
from tests.helpers.servers import PulsarBroker, RedisServer
from tests.helpers.tls_proxy import tls_terminator


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
async def acl_user(redis_server: RedisServer) -> tuple[str, str]:
    """An ACL user of the session's real redis-server, with a password of its own."""
    name, password = f"cidsync-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = redis_client(redis_server.url, {})
    try:
        await admin.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    finally:
        await admin.aclose()
    return name, password


@pytest.fixture
def redis_tls(redis_server: RedisServer, pki: Pki) -> Iterator[str]:
    with tls_terminator(redis_server.port, pki.server_cert, pki.server_key) as port:
        yield f"rediss://127.0.0.1:{port}/0"


async def test_redis_over_tls_as_an_acl_user(
    redis_tls: str, acl_user: tuple[str, str], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    name, password = acl_user
    environ = {"CIDSYNC_REDIS_CA_FILE": str(pki.ca), "CIDSYNC_REDIS_USERNAME": name, "CIDSYNC_REDIS_PASSWORD": password}
    client = redis_client(redis_tls, environ)
    try:
        assert await client.acl_whoami() == name
        await client.set(f"tls-test-{uuid.uuid4()}", "1", ex=60)
    finally:
        await client.aclose()
    wrong = redis_client(redis_tls, {**environ, "CIDSYNC_REDIS_PASSWORD": "not-the-password"})
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as refused:
        await wrong.ping()
    await wrong.aclose()
    assert password not in str(refused.value)
    assert password not in caplog.text


async def test_redis_over_tls_refuses_a_server_it_does_not_trust(redis_tls: str) -> None:
    client = redis_client(redis_tls, {})  # the system's trust store: the test CA is not in it
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.ping()
    await client.aclose()


def test_redis_settings_are_checked_and_named(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-a-file\n")
    assert redis_options("rediss://h:1/0", {"CIDSYNC_REDIS_PASSWORD_FILE": str(tmp_path / "password")}) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "password": "from-a-file",
    }
    for url, environ, variable in [
        ("redis://h:1/0", {"CIDSYNC_REDIS_CA_FILE": str(pki.ca)}, "CIDSYNC_REDIS_CA_FILE"),
        ("rediss://h:1/0", {"CIDSYNC_REDIS_CA_FILE": str(tmp_path / "missing")}, "CIDSYNC_REDIS_CA_FILE"),
        (
            "rediss://h:1/0",
            {"CIDSYNC_REDIS_TLS_CERT_FILE": str(pki.client_cert)},
            "CIDSYNC_REDIS_TLS_CERT_FILE/CIDSYNC_REDIS_TLS_KEY_FILE",
        ),
        (
            "redis://h:1/0",
            {"CIDSYNC_REDIS_PASSWORD": "a", "CIDSYNC_REDIS_PASSWORD_FILE": str(tmp_path / "password")},
            "CIDSYNC_REDIS_PASSWORD",
        ),
    ]:
        with pytest.raises(InvalidInput) as raised:
            redis_options(url, environ)
        assert raised.value.problems[0].field == variable
        assert "from-a-file" not in str(raised.value)


# --- Temporal ----------------------------------------------------------------------------------------


@pytest.fixture
def temporal_mtls(temporal_env: WorkflowEnvironment, pki: Pki) -> Iterator[str]:
    """The session's dev server behind mutual TLS (gRPC negotiates HTTP/2 by ALPN)."""
    upstream = int(temporal_env.client.service_client.config.target_host.rsplit(":", 1)[1])
    with tls_terminator(upstream, pki.server_cert, pki.server_key, client_ca=pki.ca, alpn=["h2"]) as port:
        yield f"127.0.0.1:{port}"


async def test_temporal_over_mutual_tls_from_the_standard_variables(
    temporal_mtls: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(pki.ca))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(pki.client_cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(pki.client_key))
    monkeypatch.setenv("TEMPORAL_API_KEY", "an-api-key")  # the dev server ignores it; it is sent all the same
    client = await connect(Settings(temporal_address=temporal_mtls))
    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    assert client.api_key == "an-api-key"
    monkeypatch.delenv("TEMPORAL_TLS_CLIENT_CERT_PATH")
    monkeypatch.delenv("TEMPORAL_TLS_CLIENT_KEY_PATH")
    with pytest.raises(RuntimeError):  # the proxy requires a client certificate
        await connect(Settings(temporal_address=temporal_mtls))


# --- Pulsar ------------------------------------------------------------------------------------------


def test_pulsar_tls_and_token_settings(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("eyJ.token.from-a-file\n")
    trust_and_token = {"CIDSYNC_PULSAR_TLS_CA_FILE": str(pki.ca), "CIDSYNC_PULSAR_TOKEN_FILE": str(tmp_path / "token")}
    tls = pulsar_options("pulsar+ssl://broker:6651", trust_and_token)
    assert tls["tls_trust_certs_file_path"] == str(pki.ca)
    assert (tls["tls_validate_hostname"], tls["tls_allow_insecure_connection"]) == (True, False)
    assert isinstance(tls["authentication"], pulsar.AuthenticationToken)
    mtls = pulsar_options(
        "pulsar+ssl://broker:6651",
        {"CIDSYNC_PULSAR_TLS_CERT_FILE": str(pki.client_cert), "CIDSYNC_PULSAR_TLS_KEY_FILE": str(pki.client_key)},
    )
    assert isinstance(mtls["authentication"], pulsar.AuthenticationTLS)
    assert pulsar_options("pulsar://broker.test:16650", {}) == {}
    for url, environ, variable in [
        ("pulsar://b.test:16650", {"CIDSYNC_PULSAR_TLS_CA_FILE": str(pki.ca)}, "CIDSYNC_PULSAR_TLS_CA_FILE"),
        (
            "pulsar+ssl://b:6651",
            {"CIDSYNC_PULSAR_TLS_CA_FILE": str(tmp_path / "missing")},
            "CIDSYNC_PULSAR_TLS_CA_FILE",
        ),
        (
            "pulsar+ssl://b:6651",
            {"CIDSYNC_PULSAR_TOKEN": "t", "CIDSYNC_PULSAR_TOKEN_FILE": str(tmp_path / "token")},
            "CIDSYNC_PULSAR_TOKEN",
        ),
        (
            "pulsar+ssl://b:6651",
            {"CIDSYNC_PULSAR_TLS_KEY_FILE": str(pki.client_key)},
            "CIDSYNC_PULSAR_TLS_CERT_FILE/CIDSYNC_PULSAR_TLS_KEY_FILE",
        ),
        (
            "pulsar+ssl://b:6651",
            {
                "CIDSYNC_PULSAR_TOKEN": "t",
                "CIDSYNC_PULSAR_TLS_CERT_FILE": str(pki.client_cert),
                "CIDSYNC_PULSAR_TLS_KEY_FILE": str(pki.client_key),
            },
            "CIDSYNC_PULSAR_TLS_CERT_FILE",
        ),
    ]:
        with pytest.raises(InvalidInput) as raised:
            pulsar_options(url, environ)
        assert raised.value.problems[0].field == variable
        assert "from-a-file" not in str(raised.value)


async def test_a_client_built_with_a_token_works_against_a_real_broker(
    pulsar_broker: PulsarBroker, tmp_path: Path
) -> None:
    """pulsar-lite accepts any credentials, so this shows the options are ones the real client takes (a
    bad one fails at construction), not that a broker checks them."""
    (tmp_path / "token").write_text("eyJ.token\n")
    client = pulsar_client(pulsar_broker.url, {"CIDSYNC_PULSAR_TOKEN_FILE": str(tmp_path / "token")})
    try:
        producer = await client.create_producer(f"persistent://public/default/auth-{uuid.uuid4().hex[:8]}")
        await producer.send(b"hello")
        await producer.close()
    finally:
        await client.close()
