"""The one way cidsync builds a Redis client: redis-py's own retry policy, configured once.

Out of the box the asyncio client fails the first command on every pooled connection after a Redis
restart (seen here with redis-py 8). With this policy a command that finds its connection dead
reconnects and retries with backoff (0.1 s to 2 s, 6 attempts), so a restart costs latency, not
errors; a longer outage still surfaces, to the activity's retry policy or the starter's nack.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError


def redis_client(url: str) -> Redis:
    return Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=6),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=30,
        socket_connect_timeout=5,
    )
