"""Activities over the Bridge (DICT): thin, with DICT's answers turned into Temporal's retry semantics.

- RESOURCE_EXHAUSTED: retryable, and the next attempt waits DICT's retry-after (`next_retry_delay`),
  so the wait is durable and honours DICT rather than our backoff.
- INVALID_ARGUMENT, PERMISSION_DENIED: no retry can help; non-retryable.
- UNAVAILABLE, DEADLINE_EXCEEDED: retryable (the client already retried the idempotent calls).
- CreateCidSetFile spends one of DICT's 40 files a day, so it fails non-retryably on any error and the
  workflow decides; a rate-limit refusal carries its retry-after in the error details.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CidSetFile, EntryByCid, Verification
from cidsync.entry import KeyType


class PairRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType


class VerifyRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    vsync: str


class EntryRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    cid: str


def _temporal_error(error: errors.BridgeError, *, final: bool = False) -> ApplicationError:
    kind = type(error).__name__
    if isinstance(error, errors.RateLimited):
        return ApplicationError(
            str(error),
            error.retry_after,
            type=kind,
            non_retryable=final,
            next_retry_delay=timedelta(seconds=max(error.retry_after, 0.1)),
        )
    permanent = isinstance(error, errors.InvalidArgument | errors.PermissionDenied)
    return ApplicationError(str(error), type=kind, non_retryable=final or permanent)


class BridgeActivities:
    """Built once in the worker with its Bridge client injected."""

    def __init__(self, bridge: BridgeClient) -> None:
        self.bridge = bridge

    @activity.defn(name="verify_sync")
    async def verify_sync(self, request: VerifyRequest) -> Verification:
        try:
            return await self.bridge.verify_sync(request.participant, request.key_type, request.vsync)
        except errors.BridgeError as error:
            raise _temporal_error(error) from error

    @activity.defn(name="create_cid_set_file")
    async def create_cid_set_file(self, pair: PairRef) -> CidSetFile:
        try:
            return await self.bridge.create_cid_set_file(pair.participant, pair.key_type)
        except errors.BridgeError as error:
            raise _temporal_error(error, final=True) from error

    @activity.defn(name="get_cid_set_file")
    async def get_cid_set_file(self, file_id: str) -> CidSetFile:
        try:
            return await self.bridge.get_cid_set_file(file_id)
        except errors.BridgeError as error:
            raise _temporal_error(error) from error

    @activity.defn(name="get_entry_by_cid")
    async def get_entry_by_cid(self, request: EntryRequest) -> EntryByCid | None:
        """The entry, or None when DICT no longer has it (removed since the file was made)."""
        try:
            return await self.bridge.get_entry_by_cid(request.participant, request.cid)
        except errors.NotFound:
            return None
        except errors.BridgeError as error:
            raise _temporal_error(error) from error
