"""`cidsync bridge serve`: the production server of the Bridge contract over DICT API v2.

It builds the DICT API connector from the `CIDSYNC_DICT_*` settings (each missing or unreadable file one
line, exit 2, before anything listens), the file requests' idempotency keys in Redis (shared by replicas),
and a spool for CID files, and serves `DictApiBridge` on `CIDSYNC_BRIDGE_PORT` with TLS (and mutual TLS
with a client CA) like every other server of ours. A stop lets the calls under way finish (grace period).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from cidsync.bridge.serving import SERVER_OPTIONS
from cidsync.bridge.v2 import bridge_pb2_grpc
from cidsync.config import Settings
from cidsync.dict_api.bridge_service import DictApiBridge, FileSpool
from cidsync.dict_api.client import DictApiClient, dict_api_config
from cidsync.dict_api.file_requests import FileRequests
from cidsync.errors import InvalidInput, Problem
from cidsync.redis_client import redis_client
from cidsync.telemetry.endpoint import Health

logger = logging.getLogger("cidsync.bridge.serve")

GRACE = 10.0  # seconds a stop gives the calls under way


@dataclass(frozen=True)
class ServeTls:
    cert: bytes
    key: bytes
    client_ca: bytes | None


def serve_tls(settings: Settings) -> ServeTls | None:
    """The server's own TLS from the settings; a file that cannot be read is named (exit 2)."""
    names = ("bridge_tls_server_cert", "bridge_tls_server_key", "bridge_tls_client_ca")
    paths = {name: getattr(settings, name) for name in names}
    if not any(paths.values()):
        return None
    problems = []
    if not (paths["bridge_tls_server_cert"] and paths["bridge_tls_server_key"]):
        problems.append(
            Problem("CIDSYNC_BRIDGE_TLS_SERVER_CERT", "TLS needs both a certificate and its key (…_SERVER_KEY)")
        )
    read: dict[str, bytes] = {}
    for name, path in paths.items():
        if path:
            try:
                read[name] = Path(path).read_bytes()
            except OSError as error:
                problems.append(Problem(f"CIDSYNC_{name.upper()}", f"cannot read {path}: {error.strerror}"))
    if problems:
        raise InvalidInput("bridge serve", problems)
    return ServeTls(read["bridge_tls_server_cert"], read["bridge_tls_server_key"], read.get("bridge_tls_client_ca"))


async def serve_bridge(settings: Settings, stop: asyncio.Event, health: Health | None = None) -> None:
    """Serve until `stop` is set. Raises `InvalidInput` (exit 2) for a bad setting before listening."""
    config = dict_api_config(settings)
    tls = serve_tls(settings)
    redis = redis_client(settings.require("redis_url"))
    connector = DictApiClient(config)
    spool = FileSpool(connector, Path(settings.bridge_spool_dir))
    server = grpc.aio.server(options=SERVER_OPTIONS)
    bridge_pb2_grpc.add_DictBridgeServicer_to_server(DictApiBridge(connector, FileRequests(redis), spool), server)
    address = f"{settings.bridge_host}:{settings.bridge_port}"
    if tls is None:
        server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.client_ca is not None
        )
        server.add_secure_port(address, credentials)
    if health is not None:
        health.add("redis", redis.ping)
    await server.start()
    watching = asyncio.ensure_future(watch_buckets(connector))
    logger.info(
        "bridge serving the contract on port %s (%s) over DICT API v2 at %s",
        settings.bridge_port,
        "plain gRPC" if tls is None else ("mutual TLS" if tls.client_ca else "TLS"),
        config.url,
    )
    try:
        await stop.wait()
    finally:
        watching.cancel()
        await server.stop(GRACE)
        await connector.close()
        await redis.aclose()


BUCKETS_EVERY = 120.0
BUCKETS_LOOK = 5.0


async def watch_buckets(connector: DictApiClient) -> None:
    """Each participant's rate-limit buckets, read every `BUCKETS_EVERY` (the first time within
    `BUCKETS_LOOK` of its first call), for `cidsync_dict_api_bucket_tokens` and the CID file quota alert:
    DICT tells a bucket's state only when asked. One `listBucketStates` a read (DICT allows 6 a minute, 20
    in the bucket). Runs until cancelled; a failed read is logged and tried at the next period."""
    read_at: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    while True:
        for participant in sorted(connector.participants):
            if loop.time() - read_at.get(participant, -BUCKETS_EVERY) < BUCKETS_EVERY:
                continue
            read_at[participant] = loop.time()
            try:
                await connector.policies(participant)
            except Exception as error:  # the watch outlives any one failure: the quota alert reads it
                logger.warning(
                    "could not read %s's rate-limit buckets: %s: %s", participant, type(error).__name__, error
                )
        await asyncio.sleep(BUCKETS_LOOK)
