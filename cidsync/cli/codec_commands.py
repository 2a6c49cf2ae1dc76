"""`cidsync codec-key` and `cidsync codec-server`: keys for the payload codec, and the UI's remote codec."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cidsync.cli.options import run_async, stop_on_signals
from cidsync.codec import KEYS_FILE_VARIABLE, KEYS_VARIABLE
from cidsync.errors import InvalidInput, Problem

if TYPE_CHECKING:
    from cidsync.codec.access_tokens import AccessTokenSettings

TOKEN_VARIABLE = "CIDSYNC_CODEC_SERVER_TOKEN"
JWKS_VARIABLE = "CIDSYNC_CODEC_JWKS_URL"
ISSUER_VARIABLE = "CIDSYNC_CODEC_TOKEN_ISSUER"
AUDIENCE_VARIABLE = "CIDSYNC_CODEC_TOKEN_AUDIENCE"
TLS_CERT_VARIABLE = "CIDSYNC_CODEC_TLS_CERT"
TLS_KEY_VARIABLE = "CIDSYNC_CODEC_TLS_KEY"
ORIGINS_VARIABLE = "CIDSYNC_CODEC_UI_ORIGINS"
NAMESPACES_VARIABLE = "CIDSYNC_CODEC_NAMESPACES"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from its certificate and key (PEM files); None when neither is set."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise InvalidInput("settings", [Problem("--tls-cert", "HTTPS needs both --tls-cert and --tls-key")])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise InvalidInput("settings", [Problem("--tls-cert", f"cannot load {cert} and {key}: {error}")]) from error
    return context


def _access_tokens(args: argparse.Namespace) -> AccessTokenSettings | None:
    """The identity provider whose access tokens the Web UI passes: all three settings, or none."""
    from cidsync.codec.access_tokens import AccessTokenSettings

    given = {
        "--jwks-url": args.jwks_url or os.environ.get(JWKS_VARIABLE),
        "--token-issuer": args.token_issuer or os.environ.get(ISSUER_VARIABLE),
        "--token-audience": args.token_audience or os.environ.get(AUDIENCE_VARIABLE),
    }
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise InvalidInput(
            "settings",
            [
                Problem(
                    flag,
                    "the Web UI's access tokens are checked with all of --jwks-url, --token-issuer and "
                    "--token-audience",
                )
                for flag in missing
            ],
        )
    return AccessTokenSettings(
        jwks_url=str(given["--jwks-url"]), issuer=str(given["--token-issuer"]), audience=str(given["--token-audience"])
    )


def _key(args: argparse.Namespace) -> int:
    from cidsync.codec.encryption import new_key

    key_id = args.id or f"k{datetime.now(UTC):%Y%m%d%H%M%S}"
    print(f"{key_id}={new_key()}")
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from cidsync.codec.access_tokens import AccessTokens
    from cidsync.codec.encryption import EncryptionCodec, KeyRing
    from cidsync.codec.server import CodecServer, CodecServerConfig, origins_of
    from cidsync.telemetry.endpoint import parse_bind
    from cidsync.telemetry.logs import configure_logging

    configure_logging(args.log_level)
    ring = KeyRing.from_environment()
    if ring is None:
        raise InvalidInput(
            "settings", [Problem(KEYS_VARIABLE, f"set it or {KEYS_FILE_VARIABLE}: the keys to decode with")]
        )
    host, port = parse_bind(args.bind, "--bind")
    tls = _tls(args.tls_cert or os.environ.get(TLS_CERT_VARIABLE), args.tls_key or os.environ.get(TLS_KEY_VARIABLE))
    if tls is None and not _loopback(host):
        raise InvalidInput(
            "settings",
            [
                Problem(
                    "--bind",
                    f"{host} is beyond loopback: serve HTTPS (--tls-cert and --tls-key, or {TLS_CERT_VARIABLE} "
                    f"and {TLS_KEY_VARIABLE}), or bind 127.0.0.1",
                )
            ],
        )
    origins = origins_of(args.ui_origin or os.environ.get(ORIGINS_VARIABLE, "").split(","))
    token = os.environ.get(TOKEN_VARIABLE) or None
    listed = args.namespace or os.environ.get(NAMESPACES_VARIABLE, "").split(",")
    namespaces = frozenset(name.strip() for name in listed if name.strip())
    users = _access_tokens(args)
    config = CodecServerConfig(origins, token, namespaces, AccessTokens(users) if users else None)
    server = CodecServer(EncryptionCodec(ring), host, port, config, tls).start()
    log = logging.getLogger(__name__)
    log.info(
        "codec server on %s (keys %s, active %s; UI origins %s; namespaces %s)",
        server.url,
        ", ".join(sorted(ring.keys)),
        ring.active,
        ", ".join(sorted(origins)) or "none",
        ", ".join(sorted(namespaces)) or "any",
    )
    if users is not None:
        log.info("the Web UI's users' access tokens accepted from %s (audience %s)", users.issuer, users.audience)
    if token is None and users is None:
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
        "(required of every request when set). Beyond loopback it serves HTTPS only (--tls-cert, --tls-key).",
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
    serve.add_argument(
        "--jwks-url",
        metavar="URL",
        help=f"the identity provider's keys: accept the Web UI's users' access tokens (default: {JWKS_VARIABLE})",
    )
    serve.add_argument("--token-issuer", metavar="ISS", help=f"their issuer (default: {ISSUER_VARIABLE})")
    serve.add_argument("--token-audience", metavar="AUD", help=f"their audience (default: {AUDIENCE_VARIABLE})")
    serve.add_argument(
        "--tls-cert", metavar="PEM", help=f"serve HTTPS with this certificate (default: {TLS_CERT_VARIABLE})"
    )
    serve.add_argument("--tls-key", metavar="PEM", help=f"the certificate's private key (default: {TLS_KEY_VARIABLE})")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=run_async(_serve))
