"""Reconciliation's CID file: DICT's list streamed into the round's scratch set, and the diff in Redis.

Nothing of the CID list passes through workflow history (docs/design.md §3): pages go from the Bridge
straight into a Redis set under the pair's hash tag (`CIDStore.add_file_page`), and the workflow only
ever sees counts.

Crash safety: the activity heartbeats the page token after each page it has stored, and a retry
resumes from the last heartbeat. Storing a page twice is harmless (a set). The file's SHA-256 covers
the whole file in order, and a hash state cannot be carried across a crash, so a resumed stream checks
it with one more pass that only hashes (a million CIDs cross the Bridge in about a second here).
Scratch keys carry a TTL as a backstop, should a reconciliation never clean up.

The file is DICT's set at its snapshot (`created_at`), so before the diff the set is rolled forward with
DICT's CID event log, one page a call (`roll_cid_file_forward`), and after the diff each CID of it is
judged again once changes in flight have had time to land (`judge_diff`; the rule is `cidsync.anchor`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bridge import temporal_error
from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDSetEvent, CIDSetEvents
from cidsync.entry import KeyType
from cidsync.follow import Cursor, LogError
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import Scratch
from cidsync.store.models import DiffResult, JudgedDiff

PAGE_SIZE = 1_000
MAX_EVENTS = 200  # DICT's limit for one listCidSetEvents call
DICT_LOG_ERROR = "DictLogError"  # DICT's log broke its own paging contract
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


async def read_log_page(
    bridge: BridgeClient,
    participant: str,
    key_type: KeyType,
    cursor: Cursor,
    now: datetime,
    limit: int,
    *,
    keep_limits: bool = False,
) -> tuple[CIDSetEvents, list[CIDSetEvent], Cursor]:
    """One page of DICT's CID event log from `cursor` up to `now`: the page, the events not taken before,
    and the cursor after it. DICT's refusals become Temporal's errors (a rate limit waits its retry-after),
    but with `keep_limits` a rate limit stays `RateLimited`, for a caller that has something else to do."""
    try:
        page = await bridge.list_cid_set_events(participant, key_type, cursor.start, now, limit)
    except errors.BridgeError as error:
        if keep_limits and isinstance(error, errors.RateLimited):
            raise
        raise temporal_error(error) from error
    try:
        fresh, after = cursor.take(page)
    except LogError as error:
        raise ApplicationError(str(error), type=DICT_LOG_ERROR) from error
    return page, fresh, after


class RollInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    scratch: Scratch
    cursor: Cursor  # from the file's snapshot, then from where the last page ended
    limit: int = MAX_EVENTS


class RollResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    cursor: Cursor
    events: int  # applied from this page (the repeated boundary excluded)
    has_more: bool
    head: datetime  # DICT's log is applied up to here (the page's end, or now when it was the last)


class JudgeInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    scratch: Scratch
    cutoff: datetime  # now less the grace: DICT's changes after it are still recent
    final: bool  # the last look: recent CIDs leave the diff too (not repaired this round)


class CIDFileActivities:
    """Built once in the worker with the store and the Bridge client injected. `clock` is where a page of
    DICT's log ends (read up to now); the time-skipping tests pass the server's clock."""

    def __init__(self, store: CIDStore, bridge: BridgeClient, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.bridge = bridge
        self.clock = clock or (lambda: datetime.now(UTC))

    @activity.defn(name="stream_cid_file")
    async def stream_cid_file(self, request: StreamFileInput) -> StreamFileResult:
        # Heartbeat details: [phase, page token, CIDs stored]. Phase "store" copies pages into Redis;
        # phase "verify" (only after a resume) re-reads the file to check its SHA-256.
        details = list(activity.info().heartbeat_details)
        phase, token, stored = (str(details[0]), str(details[1]), int(details[2])) if details else ("store", "", 0)
        resumed = bool(details)
        digest = hashlib.sha256()
        if phase == "store":
            async for page in self.bridge.cid_pages(
                request.scratch.participant, request.file_id, page_token=token, page_size=PAGE_SIZE
            ):
                await self.store.reconciliation.add_file_page(request.scratch, page.cids)
                if not resumed:
                    for value in page.cids:
                        digest.update(value.encode() + b"\n")
                stored += len(page.cids)
                activity.heartbeat("store", page.next_page_token, stored)
        if resumed:
            digest = hashlib.sha256()
            async for page in self.bridge.cid_pages(request.scratch.participant, request.file_id, page_size=PAGE_SIZE):
                for value in page.cids:
                    digest.update(value.encode() + b"\n")
                activity.heartbeat("verify", "", stored)
        in_redis = await self.store.reconciliation.file_cids(request.scratch)
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
        return await self.store.reconciliation.diff(scratch)

    @activity.defn(name="roll_cid_file_forward")
    async def roll_forward(self, request: RollInput) -> RollResult:
        """One page of DICT's log from the cursor, applied to the round's file set."""
        scratch, now = request.scratch, self.clock()
        page, fresh, cursor = await read_log_page(
            self.bridge, scratch.participant, scratch.key_type, request.cursor, now, request.limit
        )
        await self.store.reconciliation.roll_forward(scratch, fresh)
        return RollResult(
            cursor=cursor, events=len(fresh), has_more=page.has_more, head=cursor.start if page.has_more else now
        )

    @activity.defn(name="judge_diff")
    async def judge(self, request: JudgeInput) -> JudgedDiff:
        """The diff's CIDs judged again against the rolled-forward file and the local set now."""
        return await self.store.reconciliation.judge_candidates(request.scratch, request.cutoff, final=request.final)

    @activity.defn(name="drop_scratch")
    async def drop_scratch(self, scratch: Scratch) -> int:
        return await self.store.reconciliation.drop_scratch(scratch)
