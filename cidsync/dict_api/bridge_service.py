"""The Bridge contract served over DICT API v2: what `cidsync bridge serve` runs in production.

Each call of the contract (`proto/cidsync/bridge/v2/bridge.proto`) becomes one call of DICT API v2 through
`DictApiClient` (mutual TLS, signed requests, every response's signature checked), and each refusal of
DICT becomes the contract's status code, with `retry-after` when DICT said when to come back. Three things
DICT does not do are done here:

- **The file request's idempotency key** (`request_id`): kept in Redis for 24 hours and shared by every
  replica (`FileRequests`), so a retried `CreateCidSetFile` never spends a second of DICT's 40 files a day.
- **CID pages**: DICT gives a file as a download. The first read of an AVAILABLE file downloads it (resumed
  with a range after an interruption), checks DICT's `Bytes` and `Sha256`, and writes its CIDs normalised
  (lowercase, one 64-character CID and "\n" a line) to a spool; pages are then read from the spool by
  offset, in bounded memory. `byte_size` and `sha256` in the contract are of that normalised text, which
  the worker checks end to end; they equal DICT's own when DICT serves it so.
- **Entries** are validated as the contract's `Entry` before they are passed on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from opentelemetry.trace import Span, SpanKind, StatusCode

from cidsync.bridge import convert
from cidsync.bridge.client import SERVICE
from cidsync.bridge.errors import RETRY_AFTER
from cidsync.bridge.models import FileStatus, RateLimitBucket
from cidsync.bridge.serving import MAX_EVENTS, offset_of, page_size, page_token, participant_of
from cidsync.bridge.v2 import bridge_pb2 as pb
from cidsync.bridge.v2 import bridge_pb2_grpc
from cidsync.cid import check_cid
from cidsync.dict_api import client as dict_errors
from cidsync.dict_api import messages as m
from cidsync.dict_api.client import DictApiClient, cids_of, size_and_digest
from cidsync.dict_api.file_requests import FileRequestPending, FileRequests
from cidsync.dict_api.policies import OPERATION_OF_METHOD, POLICY_OF
from cidsync.entry import DictEntry, parse_dict_entry
from cidsync.errors import InvalidInput, Problem
from cidsync.telemetry import tracing

logger = logging.getLogger("cidsync.bridge.serve")

LINE = 65  # a normalised line: 64 hex digits and "\n"

Request = TypeVar("Request")
Reply = TypeVar("Reply")
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    retry_after: float | None = None


def refusal_of(error: BaseException) -> Refusal | None:
    """The contract's status for an error of DICT or of the request (None: not one of ours)."""
    match error:
        case InvalidInput() | dict_errors.BadRequest():
            return Refusal(grpc.StatusCode.INVALID_ARGUMENT)
        case dict_errors.Forbidden():
            return Refusal(grpc.StatusCode.PERMISSION_DENIED)
        case dict_errors.NotFound():
            return Refusal(grpc.StatusCode.NOT_FOUND)
        case dict_errors.RateLimited(retry_after=wait):
            return Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, wait)
        case dict_errors.Unavailable(retry_after=wait):
            return Refusal(grpc.StatusCode.UNAVAILABLE, wait)
        case dict_errors.ConnectionFailed() | FileRequestPending():
            return Refusal(grpc.StatusCode.UNAVAILABLE)
        case dict_errors.ResponseRejected() | dict_errors.FileCorrupt():
            return Refusal(grpc.StatusCode.DATA_LOSS)
        case dict_errors.ServerError() | dict_errors.DictApiError():
            return Refusal(grpc.StatusCode.INTERNAL)
    return None


def _server_span(method: str, context: Context) -> AbstractContextManager[Span | None]:
    """The call's span, continuing the worker's trace from its `traceparent` metadata; nothing when off."""
    if not tracing.enabled():
        return nullcontext()
    metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}
    return tracing.span(
        f"{SERVICE}/{method}", kind=SpanKind.SERVER, attributes=attributes, parent=tracing.extract(metadata)
    )


def _served(
    handler: Callable[[Any, Request, Context], Awaitable[Reply]],
) -> Callable[[Any, Request, Context], Awaitable[Reply]]:
    """Turn a refusal into the contract's status code, with `retry-after` when there is a time to wait; the
    call in a span of its own."""

    async def call(self: Any, request: Request, context: Context) -> Reply:
        with _server_span(handler.__name__, context) as span:
            try:
                return await handler(self, request, context)
            except (InvalidInput, dict_errors.DictApiError, FileRequestPending) as error:
                _refused(span, error)
                await _abort(context, error)
                raise  # unreachable: abort raises

    return call


def _refused(span: Span | None, error: BaseException) -> None:
    if span is not None and (refusal := refusal_of(error)) is not None:
        span.set_attribute("rpc.grpc.status_code", refusal.code.value[0])
        span.set_status(StatusCode.ERROR, type(error).__name__)


async def _abort(context: Context, error: BaseException) -> None:
    refusal = refusal_of(error)
    assert refusal is not None
    if refusal.retry_after is not None:
        context.set_trailing_metadata(((RETRY_AFTER, f"{refusal.retry_after:.3f}"),))
    text = error.summary() if isinstance(error, InvalidInput) else str(error)
    await context.abort(refusal.code, text)


def _file_id(value: str) -> int:
    if not value.isdigit():
        raise InvalidInput("request", [Problem("file_id", "must be DICT's file id (digits)")])
    return int(value)


@dataclass(frozen=True)
class Spooled:
    path: Path
    cids: int
    byte_size: int
    sha256: str


SPOOL_KEEP = 24 * 3600.0  # seconds a spooled file is kept after its download: a reconciliation reads it within


class FileSpool:
    """AVAILABLE CID files, downloaded once, checked, and kept normalised for paging by offset.

    A file already spooled is served without asking DICT again (one `getCidSetFile` per file, not per page:
    DICT's bucket for it is small) and its size and digest are computed once. A file is named by its
    participant, so another participant's request never finds it. Files older than `keep` seconds go when
    a new one is spooled."""

    def __init__(self, dict_api: DictApiClient, root: Path, keep: float = SPOOL_KEEP) -> None:
        self.dict_api = dict_api
        self.root = root
        self.keep = keep
        self._locks: dict[str, asyncio.Lock] = {}
        self._kept: dict[str, Spooled] = {}

    @staticmethod
    def _name(participant: str, file_id: int) -> str:
        return f"{participant}-{file_id}"

    async def kept(self, participant: str, file_id: int) -> Spooled | None:
        """The file, if it is already spooled (by this process or an earlier one on the same volume)."""
        name = self._name(participant, file_id)
        if (found := self._kept.get(name)) is not None:
            return found
        done = self.root / f"{name}.cids"
        if not done.exists():
            return None
        async with self._locks.setdefault(name, asyncio.Lock()):
            return await self._measure(name, done)

    async def ready(self, info: m.CidSetFileInfo) -> Spooled:
        name = self._name(info.participant, info.id)
        async with self._locks.setdefault(name, asyncio.Lock()):
            if (found := self._kept.get(name)) is not None:
                return found
            done = self.root / f"{name}.cids"
            if not done.exists():
                self.root.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(self._prune)
                download = await self.dict_api.download(info, self.root / f"{name}.download")
                await asyncio.to_thread(_normalise, download, done)
                download.unlink()
            return await self._measure(name, done)

    async def _measure(self, name: str, done: Path) -> Spooled:
        size, digest = await asyncio.to_thread(size_and_digest, done)
        self._kept[name] = spooled = Spooled(done, size // LINE, size, digest)
        return spooled

    def _prune(self) -> None:
        """Forget the files downloaded more than `keep` seconds ago (a download left half done as well)."""
        horizon = time.time() - self.keep
        for path in self.root.iterdir():
            if path.suffix in (".cids", ".download", ".partial") and path.stat().st_mtime < horizon:
                self._kept.pop(path.stem, None)
                path.unlink(missing_ok=True)

    @staticmethod
    def page(spooled: Spooled, offset: int, size: int) -> list[str]:
        with spooled.path.open("rb") as lines:
            lines.seek(offset * LINE)
            text = lines.read(size * LINE).decode("ascii")
        return text.split("\n")[:-1] if text else []


def _normalise(source: Path, target: Path) -> None:
    """DICT's file as lowercase 64-hex lines; a line that is not a CID refuses the file (DATA_LOSS)."""
    partial = target.with_suffix(".partial")
    with partial.open("w", encoding="ascii", newline="\n") as out:
        for value in cids_of(source):
            try:
                out.write(check_cid(value) + "\n")
            except InvalidInput:
                partial.unlink()
                raise dict_errors.FileCorrupt(f"CID file {source.name} holds a line that is not a CID") from None
    partial.rename(target)


def _entry(found: m.DictEntry) -> DictEntry:
    try:
        return parse_dict_entry(
            {
                "request_id": found.request_id,
                "key_type": found.key_type,
                "key": found.key,
                "participant": found.participant,
                "branch": found.branch,
                "account_number": found.account_number,
                "account_type": found.account_type,
                "account_opened_at": found.opening_date,
                "owner_type": found.owner_type,
                "owner_name": found.owner_name,
                "owner_trade_name": found.owner_trade_name,
                "owner_tax_id": found.owner_tax_id,
            }
        )
    except InvalidInput as error:  # DICT's own entry breaks the contract: refused, never passed on
        raise dict_errors.ResponseRejected(f"DICT's entry fails the contract's checks: {error.summary()}") from None


class DictApiBridge(bridge_pb2_grpc.DictBridgeServicer):
    def __init__(self, dict_api: DictApiClient, file_requests: FileRequests, spool: FileSpool) -> None:
        self.dict_api = dict_api
        self.file_requests = file_requests
        self.spool = spool

    @_served
    async def VerifySync(  # noqa: N802 (the contract's name)
        self, request: pb.VerifySyncRequest, context: Context
    ) -> pb.VerifySyncResponse:
        participant = participant_of(request.participant)
        key_type = convert.key_type_from_pb(request.key_type)
        if not request.participant_vsync:
            raise InvalidInput("request", [Problem("participant_vsync", "is required (64 lowercase hex digits)")])
        vsync = check_cid(request.participant_vsync)
        reply = await self.dict_api.verify_sync(participant, key_type, vsync)
        return pb.VerifySyncResponse(
            verification_id=str(reply.id),
            result=pb.VERIFICATION_RESULT_OK if reply.ok else pb.VERIFICATION_RESULT_NOK,
            verified_at=convert.timestamp(datetime.now(UTC)),
        )

    async def _file_pb(self, info: m.CidSetFileInfo) -> pb.CidSetFile:
        message = pb.CidSetFile(
            file_id=str(info.id),
            participant=info.participant,
            key_type=convert.key_type_to_pb(info.key_type),
            status=convert.file_status_to_pb(info.status),
            requested_at=convert.timestamp(info.request_time),
        )
        if info.creation_time is not None:
            message.created_at.CopyFrom(convert.timestamp(info.creation_time))
        if info.status is FileStatus.AVAILABLE:
            spooled = await self.spool.ready(info)
            message.cid_count, message.byte_size, message.sha256 = spooled.cids, spooled.byte_size, spooled.sha256
            message.available_at.CopyFrom(convert.timestamp(info.creation_time or info.request_time))
        return message

    @_served
    async def CreateCidSetFile(  # noqa: N802
        self, request: pb.CreateCidSetFileRequest, context: Context
    ) -> pb.CidSetFile:
        participant = participant_of(request.participant)
        key_type = convert.key_type_from_pb(request.key_type)
        made: list[m.CidSetFileInfo] = []

        async def create() -> int:
            made.append(await self.dict_api.create_cid_set_file(participant, key_type))
            return made[0].id

        file_id = await self.file_requests.file_for(participant, key_type, request.request_id, create)
        info = made[0] if made else await self.dict_api.get_cid_set_file(participant, file_id)
        return await self._file_pb(info)

    @_served
    async def GetCidSetFile(  # noqa: N802
        self, request: pb.GetCidSetFileRequest, context: Context
    ) -> pb.CidSetFile:
        participant = participant_of(request.participant)
        info = await self.dict_api.get_cid_set_file(participant, _file_id(request.file_id))
        return await self._file_pb(info)

    async def _spooled(self, participant: str, file_id: str) -> Spooled:
        if (kept := await self.spool.kept(participant, _file_id(file_id))) is not None:
            return kept
        info = await self.dict_api.get_cid_set_file(participant, _file_id(file_id))
        if info.status is not FileStatus.AVAILABLE:
            raise _NotAvailable(f"the file is {info.status.value}, not AVAILABLE")
        return await self.spool.ready(info)

    @_served
    async def GetCIDList(  # noqa: N802
        self, request: pb.GetCIDListRequest, context: Context
    ) -> pb.CidPage:
        participant = participant_of(request.participant)
        offset, size = offset_of(request.file_id, request.page_token), page_size(request.page_size)
        try:
            spooled = await self._spooled(participant, request.file_id)
        except _NotAvailable as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return self._page(request.file_id, spooled, offset, size)

    def _page(self, file_id: str, spooled: Spooled, offset: int, size: int) -> pb.CidPage:
        cids = self.spool.page(spooled, offset, size)
        end = offset + len(cids)
        return pb.CidPage(
            cids=cids, next_page_token=page_token(file_id, end) if end < spooled.cids else "", offset=offset
        )

    async def StreamCIDList(  # noqa: N802
        self, request: pb.StreamCIDListRequest, context: Context
    ) -> AsyncIterator[pb.CidPage]:
        with _server_span("StreamCIDList", context) as span:
            try:
                participant = participant_of(request.participant)
                offset, size = offset_of(request.file_id, request.page_token), page_size(request.page_size)
                spooled = await self._spooled(participant, request.file_id)
            except _NotAvailable as error:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            except (InvalidInput, dict_errors.DictApiError, FileRequestPending) as error:
                _refused(span, error)
                await _abort(context, error)
        while True:
            page = self._page(request.file_id, spooled, offset, size)
            yield page
            if not page.next_page_token:
                return
            offset += len(page.cids)

    @_served
    async def GetEntryByCid(  # noqa: N802
        self, request: pb.GetEntryByCidRequest, context: Context
    ) -> pb.GetEntryByCidResponse:
        participant = participant_of(request.participant)
        asked = check_cid(request.cid)
        found = await self.dict_api.get_entry_by_cid(participant, asked)
        entry = _entry(found.entry)
        return pb.GetEntryByCidResponse(
            entry=convert.entry_to_pb(entry), request_id=str(entry.request_id), cid=found.cid
        )

    @_served
    async def ListCidSetEvents(  # noqa: N802
        self, request: pb.ListCidSetEventsRequest, context: Context
    ) -> pb.ListCidSetEventsResponse:
        participant = participant_of(request.participant)
        key_type = convert.key_type_from_pb(request.key_type)
        if not 1 <= request.limit <= MAX_EVENTS:
            raise InvalidInput("request", [Problem("limit", f"must be 1 to {MAX_EVENTS}")])
        start = convert.moment(request.start_time)
        end = convert.moment(request.end_time) if request.HasField("end_time") else None
        if end is not None and end <= start:
            raise InvalidInput("request", [Problem("end_time", "must be after start_time")])
        page = await self.dict_api.list_cid_set_events(participant, key_type, start, end, request.limit)
        kinds = {"ADDED": pb.CID_EVENT_TYPE_ADDED, "REMOVED": pb.CID_EVENT_TYPE_REMOVED}
        return pb.ListCidSetEventsResponse(
            events=[
                pb.CidSetEvent(type=kinds[e.type.value], cid=e.cid, timestamp=convert.timestamp(e.timestamp))
                for e in page.events
            ],
            has_more=page.has_more,
            sync_verifier_start=page.verifier_start,
            sync_verifier_end=page.verifier_end,
        )

    @_served
    async def GetRateLimitBucket(  # noqa: N802
        self, request: pb.GetRateLimitBucketRequest, context: Context
    ) -> pb.RateLimitBucket:
        participant = participant_of(request.participant)
        operation = OPERATION_OF_METHOD.get(request.operation)
        if operation is None:
            known = ", ".join(sorted(OPERATION_OF_METHOD))
            raise InvalidInput("request", [Problem("operation", f"must be one of {known}")])
        state = await self.dict_api.policy(participant, POLICY_OF[operation])
        return convert.bucket_to_pb(
            RateLimitBucket(
                policy=state.name,
                available_tokens=state.available_tokens,
                capacity=state.capacity,
                refill_tokens=state.refill_tokens,
                refill_period_seconds=state.refill_period_sec,
                observed_at=datetime.now(UTC),
            )
        )


class _NotAvailable(Exception):
    """The file is not AVAILABLE: FAILED_PRECONDITION, as the contract says."""
