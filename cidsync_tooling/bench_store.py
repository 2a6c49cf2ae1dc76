"""The benches' view of the store: every event applied, announced by Redis the moment it is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio.cluster import RedisCluster

from cidsync.redis_client import RedisClient
from cidsync.store.layout import MARK_PATTERN
from cidsync.store.replies import text


@asynccontextmanager
async def applied_events(redis: RedisClient) -> AsyncIterator[AsyncIterator[str]]:
    """The event id of every idempotency mark set from entering on, as Redis announces it.

    How the benches see each event applied the moment it is, without polling. It turns on keyspace
    notifications for string commands (CONFIG SET) and costs every write a publish: tooling, never the product.
    """
    # A cluster's nodes each announce their own keys: every primary is told, and listened to.
    if isinstance(redis, RedisCluster):
        await redis.config_set("notify-keyspace-events", "K$", target_nodes=RedisCluster.PRIMARIES)
        pubsubs: list[Any] = [redis.pubsub(node=node) for node in redis.get_primaries()]
    else:
        await redis.config_set("notify-keyspace-events", "K$")
        pubsubs = [redis.pubsub()]
    for pubsub in pubsubs:
        await pubsub.psubscribe(f"__keyspace@*__:{MARK_PATTERN}")
    announced: asyncio.Queue[str] = asyncio.Queue()

    async def listen(pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                announced.put_nowait(text(message["channel"]).rsplit(":", 1)[1])

    async def event_ids() -> AsyncIterator[str]:
        while True:
            yield await announced.get()

    listeners = [asyncio.ensure_future(listen(pubsub)) for pubsub in pubsubs]
    try:
        yield event_ids()
    finally:
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for pubsub in pubsubs:
            await pubsub.aclose()
