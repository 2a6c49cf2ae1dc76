"""A round's outbox: the notifications its repairs wrote for core, in order, until the broker has them."""

from __future__ import annotations

from cidsync.redis_client import RedisClient
from cidsync.store.layout import Scratch


class Outbox:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def oldest(self, scratch: Scratch, count: int) -> list[bytes]:
        """The oldest `count` notifications waiting in the round's outbox, as the repair wrote them."""
        raw = await self.redis.lrange(scratch.outbox, 0, count - 1)
        return [item if isinstance(item, bytes) else item.encode() for item in raw]

    async def trim(self, scratch: Scratch, count: int) -> None:
        """Drop the oldest `count` notifications: only once the broker has acknowledged them."""
        await self.redis.ltrim(scratch.outbox, count, -1)
