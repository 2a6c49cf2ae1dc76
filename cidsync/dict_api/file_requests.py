"""The 24-hour idempotency key of a CID file request, kept in Redis and shared by every Bridge replica.

DICT's createCidSetFile takes no idempotency key and spends one of the participant's 40 files a day; our
Bridge contract promises one for 24 hours (a retry after a timeout or a crash must not spend a second
file). So each (participant, request id) is claimed in Redis before DICT is called, and the file DICT
made is recorded under it:

- the first caller claims the key (`SET NX`, 24 h TTL), calls DICT, and records the file's id;
- a caller that finds the file recorded gets that id, and DICT is not called (a request id used for
  another key type is refused: it is a bug of the caller);
- a caller that finds a live claim waits a little for the file to be recorded (another replica is calling
  DICT), then says "pending" (`FileRequestPending`, retryable) rather than hold its caller past a deadline;
- a claim older than `claim_timeout` belongs to a replica that stopped between its claim and its record:
  it is taken over (compare-and-set), and DICT is called again. `claimed_at` is the claimer's clock: the
  timeout (2 minutes) is far above the skew of synchronised hosts. Only there can a second file be spent: a
  crash in the moment between DICT's answer and the record, which nothing on our side can see into;
- a call to DICT that fails releases the claim (DICT made no file), so a retry calls DICT again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from cidsync.entry import KeyType
from cidsync.errors import InvalidInput, Problem

TTL = timedelta(hours=24)
CLAIM_TIMEOUT = timedelta(minutes=2)  # longer than a createCidSetFile call with its retries
WAIT = timedelta(seconds=10)  # for another replica's record, within a caller's deadline
POLL = 0.1


class FileRequestPending(Exception):
    """Another replica is asking DICT for this request's file right now: retry shortly."""


# Replace a claim only if it is still the one that was read (its token): two replicas taking over the same
# stale claim must not both call DICT. KEEPTTL: the key's 24 h count from the first claim.
_REPLACE = """
local current = redis.call('GET', KEYS[1])
if current == false then return 0 end
if cjson.decode(current)['token'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""


class FileRequests:
    def __init__(
        self,
        redis: Any,
        *,
        ttl: timedelta = TTL,
        claim_timeout: timedelta = CLAIM_TIMEOUT,
        wait: timedelta = WAIT,
        prefix: str = "cidsync",
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.claim_timeout = claim_timeout
        self.wait = wait
        self.prefix = prefix
        self._replace = redis.register_script(_REPLACE)

    def key(self, participant: str, request_id: str) -> str:
        return f"{self.prefix}:dict:file-request:{{{participant}}}:{request_id}"

    async def file_for(
        self, participant: str, key_type: KeyType, request_id: str, create: Callable[[], Awaitable[int]]
    ) -> int:
        """The id of the file of this request: recorded already, or made by `create()` (once)."""
        if not request_id:
            return await create()  # no idempotency asked for
        key = self.key(participant, request_id)
        token = uuid.uuid4().hex
        claim = self._value(token, key_type, file_id=None)
        if await self.redis.set(key, claim, nx=True, px=int(self.ttl.total_seconds() * 1000)):
            return await self._create(key, token, key_type, create)
        deadline = time.monotonic() + self.wait.total_seconds()
        while True:
            raw = await self.redis.get(key)
            if raw is None:  # the claimer's call failed and released it: claim it now
                if await self.redis.set(key, claim, nx=True, px=int(self.ttl.total_seconds() * 1000)):
                    return await self._create(key, token, key_type, create)
                continue
            found = json.loads(raw)
            if found["key_type"] != key_type.value:
                raise InvalidInput(
                    "request", [Problem("request_id", f"was used for a {found['key_type']} file of this participant")]
                )
            if found["file_id"] is not None:
                return int(found["file_id"])
            stale = time.time() - found["claimed_at"] > self.claim_timeout.total_seconds()
            if stale and await self._replace(keys=[key], args=[found["token"], claim]):
                return await self._create(key, token, key_type, create)
            if time.monotonic() > deadline:
                raise FileRequestPending(f"another replica is asking DICT for the file of request {request_id}")
            await asyncio.sleep(POLL)

    async def _create(self, key: str, token: str, key_type: KeyType, create: Callable[[], Awaitable[int]]) -> int:
        try:
            file_id = await create()
        except BaseException:
            await self._release(key, token)
            raise
        await self._replace(keys=[key], args=[token, self._value(token, key_type, file_id=file_id)])
        return file_id

    async def _release(self, key: str, token: str) -> None:
        raw = await self.redis.get(key)
        if raw is not None and json.loads(raw)["token"] == token and json.loads(raw)["file_id"] is None:
            await self.redis.delete(key)

    @staticmethod
    def _value(token: str, key_type: KeyType, *, file_id: int | None) -> str:
        return json.dumps({"token": token, "key_type": key_type.value, "file_id": file_id, "claimed_at": time.time()})
