"""Activities over the Bridge (DICT): thin, with DICT's answers turned into Temporal's retry semantics.

- RESOURCE_EXHAUSTED: retryable, and the next attempt waits DICT's retry-after (`next_retry_delay`),
  so the wait is durable and honours DICT rather than our backoff.
- INVALID_ARGUMENT, PERMISSION_DENIED: no retry can help; non-retryable.
- UNAVAILABLE, DEADLINE_EXCEEDED: retryable (the client already retried the idempotent calls).
- CreateCidSetFile spends one of DICT's 40 files a day. It carries the workflow's idempotency key
  (`request_id`), so retrying an ambiguous failure (a timeout, a worker crash) returns the same file
  instead of a second one. A rate-limit refusal is final for the activity, with its retry-after in the
  error details: the workflow then waits on a durable timer that the Web UI shows as such.

There is no activity for `GetEntryByCid`: its answer is an entry, personal data that must never be an
activity result (docs/design.md §5). The repair activity calls it and keeps the entry between DICT and Redis.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDSetFile, Verification
from cidsync.entry import KeyType


class CreateFileRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    request_id: str  # the idempotency key: one per file the workflow wants


class FileRef(BaseModel):
    """A CID file, and the participant that asked for it (DICT wants it on every file read)."""

    model_config = ConfigDict(frozen=True)

    participant: str
    file_id: str


class VerifyRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    vsync: str


def temporal_error(error: errors.BridgeError, *, final_if_limited: bool = False) -> ApplicationError:
    kind = type(error).__name__
    if isinstance(error, errors.RateLimited):
        return ApplicationError(
            str(error),
            error.retry_after,
            type=kind,
            non_retryable=final_if_limited,
            next_retry_delay=timedelta(seconds=max(error.retry_after, 0.1)),
        )
    if isinstance(error, errors.Unavailable) and error.retry_after is not None:
        # DICT said when to come back (503 with Retry-After): the next attempt waits that long.
        return ApplicationError(str(error), type=kind, next_retry_delay=timedelta(seconds=max(error.retry_after, 0.1)))
    permanent = isinstance(error, errors.InvalidArgument | errors.PermissionDenied)
    return ApplicationError(str(error), type=kind, non_retryable=permanent)


class BridgeActivities:
    """Built once in the worker with its Bridge client injected."""

    def __init__(self, bridge: BridgeClient) -> None:
        self.bridge = bridge

    @activity.defn(name="verify_sync")
    async def verify_sync(self, request: VerifyRequest) -> Verification:
        try:
            return await self.bridge.verify_sync(request.participant, request.key_type, request.vsync)
        except errors.BridgeError as error:
            raise temporal_error(error) from error

    @activity.defn(name="create_cid_set_file")
    async def create_cid_set_file(self, request: CreateFileRequest) -> CIDSetFile:
        try:
            return await self.bridge.create_cid_set_file(request.participant, request.key_type, request.request_id)
        except errors.BridgeError as error:
            raise temporal_error(error, final_if_limited=True) from error

    @activity.defn(name="get_cid_set_file")
    async def get_cid_set_file(self, request: FileRef) -> CIDSetFile:
        try:
            return await self.bridge.get_cid_set_file(request.participant, request.file_id)
        except errors.BridgeError as error:
            raise temporal_error(error) from error
