"""The one way cidsync builds a Redis client: redis-py's own retry policy, configured once.

Out of the box the asyncio client fails the first command on every pooled connection after a Redis
restart (seen here with redis-py 8). With this policy a command that finds its connection dead
reconnects and retries with backoff (0.1 s to 2 s, 6 attempts), so a restart costs latency, not
errors; a longer outage still surfaces, to the activity's retry policy or the starter's nack.

The pool blocks when all its connections are busy, rather than failing the command (redis-py's default
pool raises `MaxConnectionsError` past 100). Many concurrent commands are normal here (a starter with 200
starts in flight, a worker's activities), and a busy pool is not an outage: with the raising pool the
starter took each such error for one and nacked messages that only had to wait their turn.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 30.0  # past this, a command fails with ConnectionError: Redis is hung, not busy


def redis_client(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=6),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=30,
        socket_connect_timeout=5,
    )
    return Redis.from_pool(pool)
