"""The remote codec endpoint, called as the Web UI and the CLI call it: CORS preflight, then POST /decode."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from cidsync.codec.access_tokens import AccessTokens, AccessTokenSettings
from cidsync.codec.encryption import EncryptionCodec, KeyRing, new_key
from cidsync.codec.server import CodecServer, CodecServerConfig
from cidsync_tooling.devstack.pki import make_pki
from tests.helpers.cli_runner import cidsync

UI = "http://temporal-ui.test"  # an origin the browser would send; nothing listens there
TOKEN = "s3cret-token"
CODEC = EncryptionCodec(KeyRing.parse(f"k1={new_key()}", "CIDSYNC_CODEC_KEYS"))


@contextlib.contextmanager
def serving(config: CodecServerConfig) -> Iterator[str]:
    running = CodecServer(CODEC, "127.0.0.1", 0, config).start()
    try:
        yield running.url
    finally:
        running.close()


@pytest.fixture
def server() -> Iterator[str]:
    with serving(CodecServerConfig(frozenset({UI}), TOKEN)) as url:
        yield url


@pytest.fixture
def open_server() -> Iterator[str]:
    """As `cidsync dev up` runs it: loopback, no token, the stack's UI origin, one namespace."""
    with serving(CodecServerConfig(frozenset({UI}), None, frozenset({"default"}))) as url:
        yield url


Reply = tuple[int, dict[str, str], bytes]


def call(url: str, method: str = "POST", body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def encrypted(text: str) -> bytes:
    payloads = CODEC.encode_sync([Payload(metadata={"encoding": b"json/plain"}, data=text.encode())])
    return json.dumps(json_format.MessageToDict(Payloads(payloads=payloads))).encode()


def test_the_ui_preflight_is_answered_for_its_origin_only(server: str) -> None:
    status, headers, _ = call(
        f"{server}/decode", "OPTIONS", headers={"Origin": UI, "Access-Control-Request-Method": "POST"}
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == UI
    assert {"X-Namespace", "Authorization", "Content-Type"} <= {
        h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")
    }
    status, headers, _ = call(f"{server}/decode", "OPTIONS", headers={"Origin": "http://evil.example"})
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers


def test_decode_answers_with_the_token_and_refuses_without(server: str) -> None:
    body = encrypted('{"entry_id": "0b7c"}')
    ui_headers = {"Origin": UI, "Content-Type": "application/json", "X-Namespace": "default"}
    status, _, _ = call(f"{server}/decode", body=body, headers=ui_headers)
    assert status == 401
    status, _, _ = call(f"{server}/decode", body=body, headers={**ui_headers, "Authorization": "Bearer wrong"})
    assert status == 401
    authorised = {**ui_headers, "Authorization": f"Bearer {TOKEN}"}
    status, headers, reply = call(f"{server}/decode", body=body, headers=authorised)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == UI
    decoded = json_format.ParseDict(json.loads(reply), Payloads())
    assert [p.data for p in decoded.payloads] == [b'{"entry_id": "0b7c"}']


def test_encode_then_decode_round_trips_and_errors_are_clear(server: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    plain = json.dumps(json_format.MessageToDict(Payloads(payloads=[Payload(data=b"x")]))).encode()
    status, _, reply = call(f"{server}/encode", body=plain, headers=auth)
    assert status == 200
    status, _, back = call(f"{server}/decode", body=reply, headers=auth)
    assert (status, json_format.ParseDict(json.loads(back), Payloads()).payloads[0].data) == (200, b"x")
    other = EncryptionCodec(KeyRing.parse(f"k9={new_key()}", "CIDSYNC_CODEC_KEYS"))
    foreign = json.dumps(json_format.MessageToDict(Payloads(payloads=other.encode_sync([Payload(data=b"x")]))))
    status, _, reply = call(f"{server}/decode", body=foreign.encode(), headers=auth)
    assert status == 422
    assert "k9" in json.loads(reply)["error"]
    status, _, _ = call(f"{server}/decode", body=b"not json", headers=auth)
    assert status == 400
    status, _, _ = call(f"{server}/other", body=plain, headers=auth)
    assert status == 404


# What Web UI 2.54.1 sent from Chromium 156 for a run's page, captured with a logging server in the codec
# server's place (the user agent and client hints shortened; the UI sends no cookie and, without "pass
# access token", no Authorization).
UI_PREFLIGHT = {
    "Accept": "*/*",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-namespace",
    "Origin": UI,
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-site",
    "Sec-Fetch-Dest": "empty",
    "Referer": f"{UI}/",
    "Accept-Language": "en-US,en;q=0.9",
}
UI_DECODE = {
    "sec-ch-ua-platform": '"Linux"',
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0",
    "sec-ch-ua": '"Not:A-Brand";v="8", "Chromium";v="156"',
    "Content-Type": "application/json",
    "sec-ch-ua-mobile": "?0",
    "X-Namespace": "default",
    "Accept": "*/*",
    "Origin": UI,
    "Sec-Fetch-Site": "same-site",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
    "Referer": f"{UI}/",
    "Accept-Language": "en-US,en;q=0.9",
}
UI_PATH = "/decode?preserveStorageRefs=true"


def decoded_data(reply: bytes) -> list[bytes]:
    return [p.data for p in json_format.ParseDict(json.loads(reply), Payloads()).payloads]


def test_what_the_web_ui_sends_is_decoded(open_server: str) -> None:
    status, headers, _ = call(f"{open_server}{UI_PATH}", "OPTIONS", headers=UI_PREFLIGHT)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == UI
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert set(UI_PREFLIGHT["Access-Control-Request-Headers"].split(",")) <= allowed
    status, headers, reply = call(
        f"{open_server}{UI_PATH}", body=encrypted('{"participant": "12345678"}'), headers=UI_DECODE
    )
    assert status == 200, reply
    assert headers["Access-Control-Allow-Origin"] == UI
    assert decoded_data(reply) == [b'{"participant": "12345678"}']


def test_the_web_ui_passing_the_access_token_is_decoded(server: str) -> None:
    """With "pass access token" on, the UI adds Authorization to the preflight's list and to the decode."""
    asks = {**UI_PREFLIGHT, "Access-Control-Request-Headers": "authorization,content-type,x-namespace"}
    status, headers, _ = call(f"{server}{UI_PATH}", "OPTIONS", headers=asks)
    assert (status, headers["Access-Control-Allow-Origin"]) == (204, UI)
    body = encrypted('{"key_type": "EVP"}')
    status, _, reply = call(f"{server}{UI_PATH}", body=body, headers={**UI_DECODE, "Authorization": f"Bearer {TOKEN}"})
    assert (status, decoded_data(reply)) == (200, [b'{"key_type": "EVP"}'])
    status, _, reply = call(f"{server}{UI_PATH}", body=body, headers=UI_DECODE)
    assert status == 401
    assert "bearer token" in json.loads(reply)["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/decode",
        "/decode?preserveStorageRefs=false&other=1",
        "/codec/decode/",
        "/tenant-a/codec/decode?preserveStorageRefs=TRUE",
    ],
)
def test_the_route_is_the_paths_last_segment_whatever_the_query_and_prefix(open_server: str, path: str) -> None:
    """As Temporal's Go handler matches it: an ingress may mount the codec under any prefix."""
    status, _, reply = call(f"{open_server}{path}", body=encrypted('"x"'), headers=UI_DECODE)
    assert (status, decoded_data(reply)) == (200, [b'"x"'])


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "says"),
    [
        ("POST", "/download", {}, 400, "no external storage"),
        ("POST", "/decode?preserveStorageRefs=maybe", {}, 400, "true or false, not 'maybe'"),
        ("POST", "/decrypt", {}, 404, "POST /decode or /encode"),
        ("GET", "/decode", {}, 405, "POST /decode or /encode"),
        ("POST", "/decode", {"Content-Type": "text/plain"}, 415, "application/json, not 'text/plain'"),
        ("POST", "/decode", {"X-Namespace": "payments"}, 403, "namespace 'payments' is not served here"),
        ("OPTIONS", "/decode", {"Access-Control-Request-Headers": "content-type,x-custom"}, 403, "x-custom"),
        ("OPTIONS", "/decode", {"Origin": "http://evil.example"}, 403, "not a configured Web UI origin"),
    ],
)
def test_errors_say_what_was_wrong(
    open_server: str, method: str, path: str, headers: dict[str, str], status: int, says: str
) -> None:
    sent = {**(UI_PREFLIGHT if method == "OPTIONS" else UI_DECODE), **headers}
    answered, _, reply = call(
        f"{open_server}{path}", method, body=encrypted('"x"') if method == "POST" else None, headers=sent
    )
    assert answered == status
    assert says in json.loads(reply)["error"]


def test_a_body_that_is_not_payloads_is_a_400_that_says_so(open_server: str) -> None:
    for body in (b'{"payload": []}', b"\xff\xfe", b"[1, 2]"):
        status, _, reply = call(f"{open_server}/decode", body=body, headers=UI_DECODE)
        assert status == 400
        assert 'expected {"payloads": [...]}' in json.loads(reply)["error"]


def test_beyond_loopback_it_serves_https_with_its_own_certificate_and_refuses_plain_http(tmp_path: Path) -> None:
    """Browsers call the codec server from the Web UI's HTTPS page: beyond loopback it must be HTTPS. A plain
    bind beyond loopback is refused at start, naming what to set; with a certificate it answers HTTPS, and
    a client that trusts its CA decodes as the UI does."""
    env = {"CIDSYNC_CODEC_KEYS": f"k1={new_key()}"}
    refused = cidsync("codec-server", "--bind", "0.0.0.0:0", env=env)
    assert refused.returncode == 2
    assert "--tls-cert" in refused.stderr
    assert "beyond loopback" in refused.stderr
    half = cidsync("codec-server", "--bind", "127.0.0.1:0", "--tls-cert", str(tmp_path / "x.pem"), env=env)
    assert half.returncode == 2
    assert "both --tls-cert and --tls-key" in half.stderr

    pki = make_pki(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    running = CodecServer(CODEC, "127.0.0.1", 0, CodecServerConfig(frozenset({UI}), TOKEN), tls).start()
    try:
        assert running.url.startswith("https://")
        # A client that connects and says nothing holds no one else up (the handshake is in its own thread).
        silent = socket.create_connection(("127.0.0.1", int(running.url.rsplit(":", 1)[1])))
        trusting = ssl.create_default_context(cafile=str(pki.ca))
        request = urllib.request.Request(
            f"{running.url}/decode",
            data=encrypted('"hello"'),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10, context=trusting) as reply:
            decoded = json.loads(reply.read())
        assert base64.b64decode(decoded["payloads"][0]["data"]) == b'"hello"'
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            call(running.url.replace("https://", "http://") + "/decode", body=encrypted('"hello"'))
        silent.close()
    finally:
        running.close()


ISSUER = "https://idp.example.test/realms/pix"
AUDIENCE = "temporal-ui"


def signed(key: rsa.RSAPrivateKey, kid: str, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ana", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def test_the_web_uis_users_access_tokens_are_checked_against_the_identity_provider(tmp_path: Path) -> None:
    """With "pass access token" on, the Web UI sends the signed-in user's access token: accepted when the
    identity provider signed it (its JWKS), for this audience, from this issuer, and not expired; the
    static token of the CLI still works beside it."""
    ours, theirs = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ours.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    with identity_provider(tmp_path) as jwks_url:
        users = AccessTokens(AccessTokenSettings(f"{jwks_url}/jwks.json", ISSUER, AUDIENCE))
        with serving(CodecServerConfig(frozenset({UI}), TOKEN, access_tokens=users)) as url:
            decodes_only_for_valid_tokens(url, ours, theirs)


@contextlib.contextmanager
def identity_provider(folder: Path) -> Iterator[str]:
    """The identity provider's JWKS endpoint: `folder` over HTTP on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def decodes_only_for_valid_tokens(url: str, ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    def status(authorization: str) -> int:
        headers = {"Authorization": authorization, "Content-Type": "application/json", "Origin": UI}
        return call(f"{url}/decode", body=encrypted('"hi"'), headers=headers)[0]

    assert status(f"Bearer {signed(ours, 'k1')}") == 200
    assert status(f"Bearer {TOKEN}") == 200  # the CLI's --codec-auth
    refused = {
        "expired": signed(ours, "k1", exp=int(time.time()) - 120),
        "another audience": signed(ours, "k1", aud="another-app"),
        "another issuer": signed(ours, "k1", iss="https://elsewhere.test"),
        "another key": signed(theirs, "k1"),
        "an unknown key id": signed(ours, "k9"),
        "unsigned": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, "", "none"),
        "not a token": "garbage",
    }
    for what, token in refused.items():
        assert status(f"Bearer {token}") == 401, what
    assert status("") == 401


def test_the_identity_provider_is_configured_whole_or_not_at_all() -> None:
    env = {"CIDSYNC_CODEC_KEYS": f"k1={new_key()}"}
    half = cidsync("codec-server", "--jwks-url", "https://idp.test/jwks", "--token-issuer", "https://idp.test", env=env)
    assert half.returncode == 2
    assert "--token-audience" in half.stderr
