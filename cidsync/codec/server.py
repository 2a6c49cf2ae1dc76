"""The remote codec endpoint: the Web UI and `temporal --codec-endpoint` post payloads, we answer them decoded.

`POST /decode` and `POST /encode` take and return `{"payloads": [...]}` (the protobuf JSON of `Payloads`), as
Temporal's remote codec protocol defines. CORS answers the configured UI origins only (the browser calls
us from the UI's page). With a token configured, every request must carry `Authorization: Bearer <token>`
(the UI forwards it when "pass access token" is on; the CLI's `--codec-auth` sends it); without one the
server is for a developer's loopback only, and says so at start.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from cidsync.codec.encryption import CodecError, EncryptionCodec

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024  # a history page of large payloads fits; anything bigger is refused, not buffered
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"


@dataclass(frozen=True)
class CodecServerConfig:
    origins: frozenset[str] = field(default_factory=frozenset)  # Web UI origins, e.g. http://localhost:8233
    token: str | None = None


def _handler(codec: EncryptionCodec, config: CodecServerConfig) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cidsync-codec"

        def _cors(self) -> None:
            origin = self.headers.get("Origin")
            if origin and origin in config.origins:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Vary", "Origin")

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            self.send_response(HTTPStatus.NO_CONTENT if self.headers.get("Origin") in config.origins
                               else HTTPStatus.FORBIDDEN)  # fmt: skip
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            if self.path not in ("/decode", "/encode"):
                self._reply(HTTPStatus.NOT_FOUND, {"error": "POST /decode or /encode"})
                return
            if config.token is not None:
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode()):
                    self._reply(HTTPStatus.UNAUTHORIZED, {"error": "a valid bearer token is required"})
                    return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"at most {MAX_BODY} bytes"})
                return
            try:
                payloads = json_format.Parse(self.rfile.read(length), Payloads())
            except json_format.ParseError:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": 'expected {"payloads": [...]}'})
                return
            try:
                work = codec.decode_sync if self.path == "/decode" else codec.encode_sync
                answered = Payloads(payloads=work(payloads.payloads))
            except CodecError as error:
                self._reply(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(error)})
                return
            self._reply(HTTPStatus.OK, json_format.MessageToDict(answered))

        def log_message(self, format: str, *args: Any) -> None:
            # The request line only (no bodies: payloads are what we protect); at debug, as a UI polls often.
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


class CodecServer:
    """The endpoint on its own threads; `close()` stops it."""

    def __init__(self, codec: EncryptionCodec, host: str, port: int, config: CodecServerConfig) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(codec, config))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="codec-server", daemon=True)
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> CodecServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def origins_of(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().rstrip("/") for v in values if v.strip())
