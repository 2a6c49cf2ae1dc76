"""Reconciliation's Redis side: a DICT CID file streamed into a scratch set, and the server-side diff.

Nothing of the CID list passes through workflow history (DESIGN.md §3): pages go from the Bridge
straight into a Redis set under the pair's hash tag, and the workflow only ever sees counts.

Crash safety: the activity heartbeats the page token after each page it has stored, and a retry
resumes from the last heartbeat. Storing a page twice is harmless (SADD). The file's SHA-256 covers
the whole file in order, and a hash state cannot be carried across a crash, so a resumed stream checks
it with one more pass that only hashes (a million CIDs cross the Bridge in about a second here).
Scratch keys carry a TTL as a backstop, should a reconciliation never clean up.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.cid_store import RECONCILIATION_TTL_SECONDS, PairKeys
from cidsync.bridge.client import BridgeClient
from cidsync.entry import KeyType

DEFAULT_SCRATCH_TTL = timedelta(seconds=RECONCILIATION_TTL_SECONDS)
PAGE_SIZE = 1_000


class Scratch(BaseModel):
    """The scratch keys of one reconciliation run of one pair."""

    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    run_id: str

    @property
    def _base(self) -> str:
        return f"{PairKeys(self.participant, self.key_type).tag}:recon:{self.run_id}"

    @property
    def dict_cids(self) -> str:
        return f"{self._base}:dict"

    @property
    def dict_only(self) -> str:
        return f"{self._base}:dict-only"

    @property
    def local_only(self) -> str:
        return f"{self._base}:local-only"

    @property
    def outbox(self) -> str:
        """Notifications to core, written with each repair, published by `publish_outbox`."""
        return f"{self._base}:outbox"

    @property
    def all_keys(self) -> list[str]:
        return [self.dict_cids, self.dict_only, self.local_only, self.outbox]


class StreamFileInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    scratch: Scratch
    file_id: str
    cid_count: int
    sha256: str


class StreamFileResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    cids: int
    resumed: bool


class DiffResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    dict_only: int
    local_only: int


class CidFileActivities:
    """Built once in the worker with its Redis and Bridge clients injected."""

    def __init__(self, redis: Redis, bridge: BridgeClient, scratch_ttl: timedelta = DEFAULT_SCRATCH_TTL) -> None:
        self.redis = redis
        self.bridge = bridge
        self.ttl = int(scratch_ttl.total_seconds())

    @activity.defn(name="stream_cid_file")
    async def stream_cid_file(self, request: StreamFileInput) -> StreamFileResult:
        # Heartbeat details: [phase, page token, CIDs stored]. Phase "store" copies pages into Redis;
        # phase "verify" (only after a resume) re-reads the file to check its SHA-256.
        details = list(activity.info().heartbeat_details)
        phase, token, stored = (str(details[0]), str(details[1]), int(details[2])) if details else ("store", "", 0)
        resumed = bool(details)
        digest = hashlib.sha256()
        key = request.scratch.dict_cids
        if phase == "store":
            async for page in self.bridge.cid_pages(request.file_id, page_token=token, page_size=PAGE_SIZE):
                if page.cids:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.sadd(key, *page.cids)
                        pipe.expire(key, self.ttl)
                        await pipe.execute()
                if not resumed:
                    for value in page.cids:
                        digest.update(value.encode() + b"\n")
                stored += len(page.cids)
                activity.heartbeat("store", page.next_page_token, stored)
        if resumed:
            digest = hashlib.sha256()
            async for page in self.bridge.cid_pages(request.file_id, page_size=PAGE_SIZE):
                for value in page.cids:
                    digest.update(value.encode() + b"\n")
                activity.heartbeat("verify", "", stored)
        in_redis = int(await self.redis.scard(key))
        problems = []
        if stored != request.cid_count or in_redis != request.cid_count:
            problems.append(f"{request.cid_count} CIDs announced, {stored} streamed, {in_redis} distinct stored")
        if digest.hexdigest() != request.sha256:
            problems.append("the SHA-256 of what was streamed differs from the file's")
        if problems:
            # The file is not what DICT announced: a new one must be requested (the workflow decides).
            raise ApplicationError("; ".join(problems), type="CidFileMismatch", non_retryable=True)
        return StreamFileResult(cids=stored, resumed=resumed)

    @activity.defn(name="diff_cid_sets")
    async def diff(self, scratch: Scratch) -> DiffResult:
        """DICT-only and local-only CIDs, computed inside Redis; only the counts come back."""
        local = PairKeys(scratch.participant, scratch.key_type).cids
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sdiffstore(scratch.dict_only, [scratch.dict_cids, local])
            pipe.sdiffstore(scratch.local_only, [local, scratch.dict_cids])
            pipe.expire(scratch.dict_only, self.ttl)
            pipe.expire(scratch.local_only, self.ttl)
            dict_only, local_only, *_ = await pipe.execute()
        return DiffResult(dict_only=int(dict_only), local_only=int(local_only))

    @activity.defn(name="drop_scratch")
    async def drop_scratch(self, scratch: Scratch) -> int:
        return int(await self.redis.delete(*scratch.all_keys))
