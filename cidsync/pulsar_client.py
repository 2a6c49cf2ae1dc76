"""The one way cidsync builds a Pulsar client (beside `cidsync.redis_client` for Redis).

TLS and authentication come from the environment, through pulsar-client's own classes, so the service URL
(which does get printed) holds no secret: `pulsar+ssl://host:6651` for TLS, with `CIDSYNC_PULSAR_TLS_CA_FILE`
(the trust store; the host name is always checked); then either a token (`CIDSYNC_PULSAR_TOKEN`, or
`CIDSYNC_PULSAR_TOKEN_FILE`, read again whenever the client needs it, so a rotated token file is picked up:
`pulsar.AuthenticationToken`) or a client certificate (`CIDSYNC_PULSAR_TLS_CERT_FILE` and
`CIDSYNC_PULSAR_TLS_KEY_FILE`: `pulsar.AuthenticationTLS`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulsar
import pulsar.asyncio as pulsar_asyncio

from cidsync.errors import InvalidInput, Problem


def _problem(variable: str, reason: str) -> InvalidInput:
    return InvalidInput("settings", [Problem(variable, reason)])


def _file(environ: Mapping[str, str], variable: str) -> str | None:
    value = environ.get(variable, "").strip()
    if value and not Path(value).is_file():
        raise _problem(variable, "is not a readable file")
    return value or None


def pulsar_options(service_url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The client options the environment asks for; an error names any bad variable."""
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    tls = service_url.startswith("pulsar+ssl://")
    if ca := _file(environ, "CIDSYNC_PULSAR_TLS_CA_FILE"):
        if not tls:
            raise _problem("CIDSYNC_PULSAR_TLS_CA_FILE", "needs a pulsar+ssl:// CIDSYNC_PULSAR_URL")
        options["tls_trust_certs_file_path"] = ca
    if tls:
        options["tls_validate_hostname"] = True
        options["tls_allow_insecure_connection"] = False
    token, token_file = environ.get("CIDSYNC_PULSAR_TOKEN", "").strip(), _file(environ, "CIDSYNC_PULSAR_TOKEN_FILE")
    cert, key = _file(environ, "CIDSYNC_PULSAR_TLS_CERT_FILE"), _file(environ, "CIDSYNC_PULSAR_TLS_KEY_FILE")
    if token and token_file:
        raise _problem("CIDSYNC_PULSAR_TOKEN", "set it or CIDSYNC_PULSAR_TOKEN_FILE, not both")
    if (cert is None) != (key is None):
        raise _problem("CIDSYNC_PULSAR_TLS_CERT_FILE/CIDSYNC_PULSAR_TLS_KEY_FILE", "give both, or neither")
    if cert and (token or token_file):
        raise _problem("CIDSYNC_PULSAR_TLS_CERT_FILE", "a client certificate or a token, not both")
    if cert and not tls:
        raise _problem("CIDSYNC_PULSAR_TLS_CERT_FILE", "needs a pulsar+ssl:// CIDSYNC_PULSAR_URL")
    if token:
        options["authentication"] = pulsar.AuthenticationToken(token)
    elif token_file:
        path = Path(token_file)
        options["authentication"] = pulsar.AuthenticationToken(lambda: path.read_text().strip())
    elif cert and key:
        options["authentication"] = pulsar.AuthenticationTLS(cert, key)
    return options


def pulsar_client(service_url: str, environ: Mapping[str, str] | None = None, **options: Any) -> pulsar_asyncio.Client:
    """A Pulsar client whose native logs go to Python logging (logger "pulsar"), not to stdout."""
    options = {**pulsar_options(service_url, environ), **options}
    options.setdefault("logger", logging.getLogger("pulsar"))
    options.setdefault("operation_timeout_seconds", 30)
    return pulsar_asyncio.Client(service_url, **options)
