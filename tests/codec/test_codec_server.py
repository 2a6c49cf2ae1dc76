"""The remote codec endpoint, called as the Web UI calls it: CORS preflight, then POST /decode with a token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from cidsync.codec.encryption import EncryptionCodec, KeyRing, new_key
from cidsync.codec.server import CodecServer, CodecServerConfig

UI = "http://temporal-ui.test"  # an origin the browser would send; nothing listens there
TOKEN = "s3cret-token"
CODEC = EncryptionCodec(KeyRing.parse(f"k1={new_key()}", "CIDSYNC_CODEC_KEYS"))


@pytest.fixture
def server() -> Iterator[str]:
    running = CodecServer(CODEC, "127.0.0.1", 0, CodecServerConfig(frozenset({UI}), TOKEN)).start()
    try:
        yield running.url
    finally:
        running.close()


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
        h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}  # fmt: skip
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
