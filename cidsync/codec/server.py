"""The remote codec endpoint: the Web UI and `temporal --codec-endpoint` post payloads, we answer them decoded.

Temporal's remote codec protocol, as the Web UI (2.54) and the `temporal` CLI speak it:
- `POST <prefix>/decode` and `POST <prefix>/encode` take and return `{"payloads": [...]}` (the protobuf JSON
  of `Payloads`). The route is the path's last segment, its query string apart, as Temporal's Go handler
  matches it, so the endpoint may sit behind an ingress under any prefix.
- The Web UI adds `?preserveStorageRefs=true` to every decode: "return external-storage references as they
  are instead of downloading them". This server has no external storage and never downloads, so `true` and
  `false` both hold; another value is refused (a client that sends it expects something we don't do).
  Other query parameters are ignored, as Temporal's handler ignores them. `POST /download` (the UI's
  "show the stored payload") is answered with an error saying there is no external storage here.
- The UI sends `Content-Type: application/json` and `X-Namespace: <namespace>`, and `Authorization` when
  "pass access token" is on: CORS allows those three, for the configured UI origins only (the browser
  calls us from the UI's page). With namespaces configured, a request naming another one is refused.
- With a token configured, every request must carry `Authorization: Bearer <token>` (the CLI's
  `--codec-auth` sends it); with an identity provider configured, the Web UI's signed-in user's access
  token is accepted too, once checked (`access_tokens.py`). Without either the server is for a developer's
  loopback only, and says so at start.

- Browsers reach it from the Web UI's HTTPS page, so beyond loopback it serves HTTPS with its own
  certificate (`cidsync codec-server --tls-cert --tls-key`); a plain HTTP bind beyond loopback is refused
  at start.

Every error is JSON, `{"error": "..."}`, saying what was wrong and what is expected.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from cidsync.codec.access_tokens import AccessTokens
from cidsync.codec.encryption import CodecError, EncryptionCodec

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024  # a history page of large payloads fits; anything bigger is refused, not buffered
ALLOWED_HEADERS = ("Content-Type", "X-Namespace", "Authorization")
ROUTES = ("decode", "encode")
PRESERVE_STORAGE_REFS = "preserveStorageRefs"


@dataclass(frozen=True)
class CodecServerConfig:
    origins: frozenset[str] = field(default_factory=frozenset)  # Web UI origins, e.g. http://localhost:8233
    token: str | None = None
    # Namespaces whose payloads this server decodes (X-Namespace); empty: any. The keys are the same for
    # every namespace, so this is a fence for a shared Web UI, not a key choice.
    namespaces: frozenset[str] = field(default_factory=frozenset)
    # The Web UI's signed-in users (its "pass access token"): their access tokens, checked (access_tokens.py).
    access_tokens: AccessTokens | None = None


class _Refused(Exception):
    """A request this server will not answer, with the status and the words that say why."""

    def __init__(self, status: HTTPStatus, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _route(raw_path: str) -> str:
    """`decode` or `encode` from `[/prefix]/decode?query`; the query is checked, never matched."""
    parts = urlsplit(raw_path)
    route = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if route == "download":
        raise _Refused(
            HTTPStatus.BAD_REQUEST,
            "this codec server has no external storage: no payload here is a storage reference, "
            "and /decode returns every payload decoded",
        )
    if route not in ROUTES:
        raise _Refused(HTTPStatus.NOT_FOUND, f"no route {parts.path!r}: POST /decode or /encode")
    for value in parse_qs(parts.query, keep_blank_values=True).get(PRESERVE_STORAGE_REFS, []):
        if value.lower() not in ("true", "false"):
            raise _Refused(HTTPStatus.BAD_REQUEST, f"{PRESERVE_STORAGE_REFS} is true or false, not {value!r}")
    return route


def _handler(codec: EncryptionCodec, config: CodecServerConfig) -> type[BaseHTTPRequestHandler]:
    bearer = f"Bearer {config.token}".encode() if config.token is not None else None

    class Handler(BaseHTTPRequestHandler):
        server_version = "cidsync-codec"

        def _cors(self) -> None:
            origin = self.headers.get("Origin")
            if origin and origin in config.origins:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS))
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Access-Control-Max-Age", "600")  # one preflight per route for 10 minutes
                self.send_header("Vary", "Origin")

        def _reply(self, status: HTTPStatus, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self._cors()
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            origin = self.headers.get("Origin")
            if origin not in config.origins:
                self._reply(HTTPStatus.FORBIDDEN, {"error": f"origin {origin!r} is not a configured Web UI origin"})
                return
            asked = {h.strip().lower() for h in self.headers.get("Access-Control-Request-Headers", "").split(",")}
            unknown = sorted(asked - {h.lower() for h in ALLOWED_HEADERS} - {""})
            if unknown:
                # The browser would refuse the real request anyway; say which header is the reason.
                error = f"headers not allowed: {', '.join(unknown)}; allowed: {', '.join(ALLOWED_HEADERS)}"
                self._reply(HTTPStatus.FORBIDDEN, {"error": error})
                return
            self.send_response(HTTPStatus.NO_CONTENT)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "POST /decode or /encode"}, {"Allow": "POST, OPTIONS"})

        def do_POST(self) -> None:
            try:
                route = _route(self.path)
                self._check_caller()
                payloads = self._payloads()
                work = codec.decode_sync if route == "decode" else codec.encode_sync
                answered = Payloads(payloads=work(payloads.payloads))
            except _Refused as refused:
                self._reply(refused.status, {"error": refused.error})
                return
            except CodecError as error:
                self._reply(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(error)})
                return
            self._reply(HTTPStatus.OK, json_format.MessageToDict(answered))

        def _check_caller(self) -> None:
            if bearer is not None or config.access_tokens is not None:
                given = self.headers.get("Authorization", "")
                static = bearer is not None and hmac.compare_digest(given.encode(), bearer)
                scheme, _, token = given.partition(" ")
                user = (
                    config.access_tokens is not None
                    and scheme.lower() == "bearer"
                    and bool(token)
                    and config.access_tokens.valid(token.strip())
                )
                if not (static or user):
                    raise _Refused(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required (Authorization: Bearer)")
            namespace = self.headers.get("X-Namespace")
            if config.namespaces and namespace not in config.namespaces:
                raise _Refused(HTTPStatus.FORBIDDEN, f"namespace {namespace!r} is not served here (X-Namespace)")

        def _payloads(self) -> Payloads:
            content_type = self.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
            if content_type != "application/json":
                error = f"Content-Type is application/json, not {content_type!r}"
                raise _Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, error)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY} bytes")
            try:
                return json_format.Parse(self.rfile.read(length).decode("utf-8"), Payloads())
            except (json_format.ParseError, UnicodeDecodeError) as error:
                raise _Refused(HTTPStatus.BAD_REQUEST, f'expected {{"payloads": [...]}}: {error}') from None

        def log_message(self, format: str, *args: Any) -> None:
            # The request line only (no bodies: payloads are what we protect); at debug, as a UI polls often.
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


class CodecServer:
    """The endpoint on its own threads; `close()` stops it."""

    def __init__(
        self,
        codec: EncryptionCodec,
        host: str,
        port: int,
        config: CodecServerConfig,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(codec, config))
        if tls is not None:
            # The handshake at the connection's first read, in its own thread: done at accept, in the
            # serving thread, one client that connects and says nothing would hold every other one.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="codec-server", daemon=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self._server.server_address[1]}"

    def start(self) -> CodecServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def origins_of(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().rstrip("/") for v in values if v.strip())
