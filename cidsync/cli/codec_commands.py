"""`cidsync codec-key` and `cidsync codec-server`: keys for the payload codec, and the UI's remote codec."""

from __future__ import annotations

import argparse
import logging
import os
from datetime import UTC, datetime
from typing import Any

from cidsync.cli.options import run_async, stop_on_signals
from cidsync.codec.encryption import KEYS_FILE_VARIABLE, KEYS_VARIABLE, EncryptionCodec, KeyRing, new_key
from cidsync.codec.server import CodecServer, CodecServerConfig, origins_of
from cidsync.errors import InvalidInput, Problem
from cidsync.telemetry.endpoint import parse_bind
from cidsync.telemetry.logs import configure_logging

TOKEN_VARIABLE = "CIDSYNC_CODEC_SERVER_TOKEN"
ORIGINS_VARIABLE = "CIDSYNC_CODEC_UI_ORIGINS"
NAMESPACES_VARIABLE = "CIDSYNC_CODEC_NAMESPACES"


def _key(args: argparse.Namespace) -> int:
    key_id = args.id or f"k{datetime.now(UTC):%Y%m%d%H%M%S}"
    print(f"{key_id}={new_key()}")
    return 0


async def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    ring = KeyRing.from_environment()
    if ring is None:
        raise InvalidInput(
            "settings", [Problem(KEYS_VARIABLE, f"set it or {KEYS_FILE_VARIABLE}: the keys to decode with")]
        )
    host, port = parse_bind(args.bind, "--bind")
    origins = origins_of(args.ui_origin or os.environ.get(ORIGINS_VARIABLE, "").split(","))
    token = os.environ.get(TOKEN_VARIABLE) or None
    listed = args.namespace or os.environ.get(NAMESPACES_VARIABLE, "").split(",")
    namespaces = frozenset(name.strip() for name in listed if name.strip())
    server = CodecServer(EncryptionCodec(ring), host, port, CodecServerConfig(origins, token, namespaces)).start()
    log = logging.getLogger(__name__)
    log.info(
        "codec server on %s (keys %s, active %s; UI origins %s; namespaces %s)",
        server.url,
        ", ".join(sorted(ring.keys)),
        ring.active,
        ", ".join(sorted(origins)) or "none",
        ", ".join(sorted(namespaces)) or "any",
    )
    if token is None:
        log.warning("%s is not set: anyone who reaches %s can decode; keep it on loopback", TOKEN_VARIABLE, server.url)
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        server.close()
    return 0


def register(commands: Any) -> None:
    key = commands.add_parser("codec-key", help="print a new payload-codec key as ID=BASE64 (for CIDSYNC_CODEC_KEYS)")
    key.add_argument("--id", help="the key id (default: k<UTC timestamp>)")
    key.set_defaults(handler=_key)

    serve = commands.add_parser(
        "codec-server",
        help="serve /decode and /encode for the Web UI and `temporal --codec-endpoint`",
        description=f"Keys from {KEYS_VARIABLE} or {KEYS_FILE_VARIABLE}; a bearer token from {TOKEN_VARIABLE} "
        "(required of every request when set).",
    )
    serve.add_argument("--bind", default="127.0.0.1:8081", metavar="HOST:PORT")
    serve.add_argument(
        "--ui-origin",
        action="append",
        metavar="URL",
        help=f"a Web UI origin allowed by CORS; repeatable (default: {ORIGINS_VARIABLE})",
    )
    serve.add_argument(
        "--namespace",
        action="append",
        metavar="NAME",
        help=f"decode only for this namespace (the X-Namespace the UI sends); repeatable "
        f"(default: {NAMESPACES_VARIABLE}, else any)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=run_async(_serve))
