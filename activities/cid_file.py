"""Reconciliation's CID file: DICT's list streamed into the round's scratch set, and the diff in Redis.

Nothing of the CID list passes through workflow history (DESIGN.md §3): pages go from the Bridge
straight into a Redis set under the pair's hash tag (`CIDStore.add_file_page`), and the workflow only
ever sees counts.

Crash safety: the activity heartbeats the page token after each page it has stored, and a retry
resumes from the last heartbeat. Storing a page twice is harmless (a set). The file's SHA-256 covers
the whole file in order, and a hash state cannot be carried across a crash, so a resumed stream checks
it with one more pass that only hashes (a million CIDs cross the Bridge in about a second here).
Scratch keys carry a TTL as a backstop, should a reconciliation never clean up.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from cidsync.bridge.client import BridgeClient
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import Scratch
from cidsync.store.models import DiffResult

PAGE_SIZE = 1_000
# The file is not what DICT announced (count or digest): a new one must be requested (the workflow decides).
CID_FILE_MISMATCH = "CidFileMismatch"


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


class CidFileActivities:
    """Built once in the worker with the store and the Bridge client injected."""

    def __init__(self, store: CIDStore, bridge: BridgeClient) -> None:
        self.store = store
        self.bridge = bridge

    @activity.defn(name="stream_cid_file")
    async def stream_cid_file(self, request: StreamFileInput) -> StreamFileResult:
        # Heartbeat details: [phase, page token, CIDs stored]. Phase "store" copies pages into Redis;
        # phase "verify" (only after a resume) re-reads the file to check its SHA-256.
        details = list(activity.info().heartbeat_details)
        phase, token, stored = (str(details[0]), str(details[1]), int(details[2])) if details else ("store", "", 0)
        resumed = bool(details)
        digest = hashlib.sha256()
        if phase == "store":
            async for page in self.bridge.cid_pages(request.file_id, page_token=token, page_size=PAGE_SIZE):
                await self.store.add_file_page(request.scratch, page.cids)
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
        in_redis = await self.store.file_cids(request.scratch)
        problems = []
        if stored != request.cid_count or in_redis != request.cid_count:
            problems.append(f"{request.cid_count} CIDs announced, {stored} streamed, {in_redis} distinct stored")
        if digest.hexdigest() != request.sha256:
            problems.append("the SHA-256 of what was streamed differs from the file's")
        if problems:
            raise ApplicationError("; ".join(problems), type=CID_FILE_MISMATCH, non_retryable=True)
        return StreamFileResult(cids=stored, resumed=resumed)

    @activity.defn(name="diff_cid_sets")
    async def diff(self, scratch: Scratch) -> DiffResult:
        """DICT-only and local-only CIDs, computed inside Redis; only the counts come back."""
        return await self.store.diff(scratch)

    @activity.defn(name="drop_scratch")
    async def drop_scratch(self, scratch: Scratch) -> int:
        return await self.store.drop_scratch(scratch)
