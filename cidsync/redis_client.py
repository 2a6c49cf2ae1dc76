"""The one way cidsync builds a Redis client: redis-py's own retry policy, configured once.

Out of the box the asyncio client fails the first command on every pooled connection after a Redis
restart (seen here with redis-py 8). With this policy a command that finds its connection dead
reconnects and retries with backoff (0.1 s to 2 s, 6 attempts), so a restart costs latency, not
errors; a longer outage still surfaces, to the activity's retry policy or the starter's nack.

The pool blocks when all its connections are busy, rather than failing the command (redis-py's default
pool raises `MaxConnectionsError` past 100). Many concurrent commands are normal here (a starter with 200
starts in flight, a worker's activities), and a busy pool is not an outage: with the raising pool the
starter took each such error for one and nacked messages that only had to wait their turn.

TLS and ACLs come from the environment, so the URL (which does get printed) holds no secret:
`rediss://host:port/0` for TLS, with `CIDSYNC_REDIS_CA_FILE` (the CA to trust, else the system's) and
optionally `CIDSYNC_REDIS_TLS_CERT_FILE`/`CIDSYNC_REDIS_TLS_KEY_FILE` (a client certificate);
`CIDSYNC_REDIS_USERNAME` and `CIDSYNC_REDIS_PASSWORD` (or `CIDSYNC_REDIS_PASSWORD_FILE`) for an ACL user.

A Redis Cluster is chosen by the URL's scheme: `redis+cluster://host:port[,host:port...]` (or
`rediss+cluster://` for TLS) names one or more of its nodes, from which redis-py's `RedisCluster` learns
the rest. Every key of a (participant, key type) shares the pair's hash tag, so every script and every
transaction stays within one slot (`cidsync.store.layout`). The cluster client retries with the same
backoff; a command to a primary that is down fails over to a fresh view of the cluster on each attempt
(ConnectionError, ClusterDownError, MOVED), and surfaces once the attempts are spent, as a single
Redis's outage does. Its connections are bounded per node (`CLUSTER_MAX_CONNECTIONS`): redis-py's
cluster client raises rather than waits past that, so the bound is set above what one process ever has
in flight.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from cidsync.errors import InvalidInput, Problem

MAX_CONNECTIONS = 64
CLUSTER_MAX_CONNECTIONS = 512  # per node; the starter has at most a few hundred commands in flight
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
RETRIES = 6

# What a role holds: one Redis, or a Redis Cluster (`redis_client` chooses by the URL).
RedisClient = Redis | RedisCluster
POOL_WAIT_SECONDS = 30.0  # past this, a command fails with ConnectionError: Redis is hung, not busy
TLS_FILES = {
    "ssl_ca_certs": "CIDSYNC_REDIS_CA_FILE",
    "ssl_certfile": "CIDSYNC_REDIS_TLS_CERT_FILE",
    "ssl_keyfile": "CIDSYNC_REDIS_TLS_KEY_FILE",
}


def _readable(variable: str, value: str) -> str:
    if not Path(value).is_file():
        raise InvalidInput("settings", [Problem(variable, "is not a readable file")])
    return value


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The nodes a `redis+cluster://` URL names (host:port, comma-separated; port 6379 by default)."""
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    nodes = []
    for item in where.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "6379")
        if not host or not port.isdigit():
            raise InvalidInput("settings", [Problem("CIDSYNC_REDIS_URL", f"{item!r} is not host:port")])
        nodes.append((host, int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise InvalidInput("settings", [Problem("CIDSYNC_REDIS_URL", "a Redis Cluster has database 0 only")])
    return nodes


def redis_options(url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection options the environment adds to `url`; an error names any bad variable."""
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    tls = urlsplit(url).scheme in ("rediss", "rediss+cluster")
    for option, variable in TLS_FILES.items():
        if value := environ.get(variable, "").strip():
            if not tls:
                raise InvalidInput("settings", [Problem(variable, "needs a rediss:// CIDSYNC_REDIS_URL")])
            options[option] = _readable(variable, value)
    if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
        raise InvalidInput(
            "settings", [Problem("CIDSYNC_REDIS_TLS_CERT_FILE/CIDSYNC_REDIS_TLS_KEY_FILE", "give both, or neither")]
        )
    if tls:
        options["ssl_cert_reqs"] = "required"  # and the host name checked: never a connection on trust
        options["ssl_check_hostname"] = True
    if username := environ.get("CIDSYNC_REDIS_USERNAME", "").strip():
        options["username"] = username
    password, password_file = environ.get("CIDSYNC_REDIS_PASSWORD", ""), environ.get("CIDSYNC_REDIS_PASSWORD_FILE", "")
    if password and password_file:
        raise InvalidInput(
            "settings", [Problem("CIDSYNC_REDIS_PASSWORD", "set it or CIDSYNC_REDIS_PASSWORD_FILE, not both")]
        )
    if password_file:
        options["password"] = Path(_readable("CIDSYNC_REDIS_PASSWORD_FILE", password_file)).read_text().strip()
    elif password:
        options["password"] = password
    return options


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=RETRIES)


def redis_client(url: str, environ: Mapping[str, str] | None = None) -> RedisClient:
    if is_cluster_url(url):
        options = redis_options(url, environ)
        if urlsplit(url).scheme == "rediss+cluster":
            options["ssl"] = True
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
            max_connections=CLUSTER_MAX_CONNECTIONS,
            retry=_retry(),
            retry_on_error=[ConnectionError, TimeoutError],
            health_check_interval=30,
            socket_connect_timeout=5,
            **options,
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        retry=_retry(),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=30,
        socket_connect_timeout=5,
        **redis_options(url, environ),
    )
    return Redis.from_pool(pool)
