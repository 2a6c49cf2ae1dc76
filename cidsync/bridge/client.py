"""The production Bridge client (grpc.aio), used by activities and the operator CLI.

Resilience comes from gRPC itself, configured once here rather than hand-written around each call:
- gRPC's retry policy (service config) retries UNAVAILABLE with backoff for the idempotent calls only.
  `CreateCidSetFile` is never retried here: a call without an idempotency key (`request_id`) may
  spend one of DICT's 40 files a day. The reconciliation workflow sends a key of its own and lets its
  activity be retried: the same key returns the same file.
- Every call has a deadline; keepalive pings every 10 s (3 s timeout) find dead connections before a
  call does.
- RESOURCE_EXHAUSTED is not retried: it becomes `RateLimited` with DICT's retry-after, so a workflow
  can wait durably instead of burning the quota. With a `DictBudget`, the participant's share of DICT's
  limits is kept on our side first (`cidsync.bridge.budget`), so DICT is not asked past them at all.
CID lists are exposed as async iterators of pages, so no caller ever holds a whole file in memory.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import grpc
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from cidsync.bridge import convert
from cidsync.bridge.budget import DictBudget
from cidsync.bridge.errors import BridgeError, RateLimited, from_rpc_error
from cidsync.bridge.models import (
    CIDEventType,
    CIDPage,
    CIDSetEvent,
    CIDSetEvents,
    CIDSetFile,
    EntryByCID,
    RateLimitBucket,
    Verification,
)
from cidsync.bridge.v2 import bridge_pb2 as pb
from cidsync.bridge.v2 import bridge_pb2_grpc
from cidsync.entry import KeyType
from cidsync.telemetry import tracing

SERVICE = "cidsync.bridge.v2.DictBridge"
IDEMPOTENT_METHODS = (
    "VerifySync",
    "GetCidSetFile",
    "GetCIDList",
    "StreamCIDList",
    "GetEntryByCid",
    "ListCidSetEvents",
)
DEFAULT_DEADLINE = 30.0
DEFAULT_STREAM_DEADLINE = 600.0

Reply = TypeVar("Reply")


def _rpc_span(method: str) -> AbstractContextManager[Span | None]:
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}
    return tracing.span(f"{SERVICE}/{method}", kind=SpanKind.CLIENT, attributes=attributes)


def _trace_metadata() -> tuple[tuple[str, str], ...] | None:
    """`traceparent` for the Bridge (or the simulator) to continue the caller's trace; None when off."""
    return tuple(tracing.inject({}).items()) if tracing.enabled() else None


def service_config(max_attempts: int = 5) -> str:
    """gRPC's own retry policy: UNAVAILABLE, exponential backoff, idempotent methods only."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE, "method": method} for method in IDEMPOTENT_METHODS],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.2s",
                        "maxBackoff": "5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


@dataclass(frozen=True)
class ClientTls:
    """TLS to the Bridge. No CA: the system's roots. A cert and key: mutual TLS."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None  # when the certificate names another host than the address

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTls | None:
        """From CIDSYNC_BRIDGE_TLS_{CA,CERT,KEY} (PEM file paths) and CIDSYNC_BRIDGE_TLS_SERVER_NAME.

        CIDSYNC_BRIDGE_TLS=1 turns TLS on with the system's roots when no CA file is given.
        """
        env = os.environ if environ is None else environ

        def read(name: str) -> bytes | None:
            path = env.get(f"CIDSYNC_BRIDGE_TLS_{name}")
            return Path(path).read_bytes() if path else None

        ca, cert, key = read("CA"), read("CERT"), read("KEY")
        server_name = env.get("CIDSYNC_BRIDGE_TLS_SERVER_NAME") or None
        if not (ca or cert or key or server_name or env.get("CIDSYNC_BRIDGE_TLS") == "1"):
            return None
        if bool(cert) != bool(key):
            raise ValueError("mutual TLS needs both CIDSYNC_BRIDGE_TLS_CERT and CIDSYNC_BRIDGE_TLS_KEY")
        return cls(ca=ca, cert=cert, key=key, server_name=server_name)


def channel_options(tls: ClientTls | None, retry_attempts: int) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 3_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if retry_attempts >= 2:  # gRPC refuses a policy of fewer than 2 attempts; 1 means no retry
        options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config(retry_attempts))]
    else:
        options.append(("grpc.enable_retries", 0))
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


class BridgeClient:
    def __init__(
        self,
        address: str,
        *,
        tls: ClientTls | None = None,
        deadline: float = DEFAULT_DEADLINE,
        stream_deadline: float = DEFAULT_STREAM_DEADLINE,
        retry_attempts: int = 5,
        budget: DictBudget | None = None,
    ) -> None:
        self.address = address
        self.deadline = deadline
        self.stream_deadline = stream_deadline
        self.budget = budget  # DICT's rate limits kept on our side, shared by every worker (None: DICT's only)
        self.reserve = 0.0
        options = channel_options(tls, retry_attempts)
        if tls is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
            )
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._stub = bridge_pb2_grpc.DictBridgeStub(self._channel)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    def reserving(self, reserve: float) -> BridgeClient:
        """This client (the same channel) for routine reads: it leaves the last `reserve` tokens of each of
        DICT's buckets to the others (`cidsync.bridge.budget`)."""
        routine = copy.copy(self)
        routine.reserve = reserve
        return routine

    async def _spend(self, participant: str, operation: str) -> None:
        """A token of the participant's bucket for `operation`, or DICT's refusal, before DICT sees the call."""
        if self.budget is None:
            return
        wait = await self.budget.take(participant, operation, self.reserve)
        if wait > 0:
            raise RateLimited(
                f"{operation}: the participant's share of DICT's rate limit is spent for now",
                operation,
                retry_after=wait,
            )

    async def check_connected(self) -> None:
        """Readiness: raises unless the channel is (or can become) connected; spends no DICT quota."""
        state = self._channel.get_state(try_to_connect=True)
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionError(f"the Bridge at {self.address} is {state.name.lower()}")

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, method: str, call: Callable[..., Awaitable[Reply]], request: Any) -> Reply:
        with _rpc_span(method) as span:
            try:
                return await call(request, timeout=self.deadline, metadata=_trace_metadata())
            except grpc.aio.AioRpcError as error:
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                    span.set_status(Status(StatusCode.ERROR, error.code().name))
                raise from_rpc_error(error, method) from None

    async def verify_sync(self, participant: str, key_type: KeyType, vsync: str) -> Verification:
        await self._spend(participant, "VerifySync")
        reply: pb.VerifySyncResponse = await self._call(
            "VerifySync",
            self._stub.VerifySync,
            pb.VerifySyncRequest(
                participant=participant, key_type=convert.key_type_to_pb(key_type), participant_vsync=vsync
            ),
        )
        return Verification(
            verification_id=reply.verification_id,
            ok=reply.result == pb.VERIFICATION_RESULT_OK,
            verified_at=convert.moment(reply.verified_at),
        )

    async def create_cid_set_file(self, participant: str, key_type: KeyType, request_id: str = "") -> CIDSetFile:
        """Spends DICT quota; never retried here (see the module docstring).

        `request_id` is the idempotency key: the same key returns the same file, so the caller (a
        Temporal activity) may retry an ambiguous failure without spending a second file.
        """
        request = pb.CreateCidSetFileRequest(
            participant=participant, key_type=convert.key_type_to_pb(key_type), request_id=request_id
        )
        reply: pb.CidSetFile = await self._call("CreateCidSetFile", self._stub.CreateCidSetFile, request)
        return convert.cid_set_file_from_pb(reply)

    async def get_cid_set_file(self, participant: str, file_id: str) -> CIDSetFile:
        reply: pb.CidSetFile = await self._call(
            "GetCidSetFile",
            self._stub.GetCidSetFile,
            pb.GetCidSetFileRequest(participant=participant, file_id=file_id),
        )
        return convert.cid_set_file_from_pb(reply)

    async def get_cid_page(self, participant: str, file_id: str, page_token: str = "", page_size: int = 0) -> CIDPage:
        reply: pb.CidPage = await self._call(
            "GetCIDList",
            self._stub.GetCIDList,
            pb.GetCIDListRequest(participant=participant, file_id=file_id, page_token=page_token, page_size=page_size),
        )
        return CIDPage(cids=list(reply.cids), next_page_token=reply.next_page_token, offset=reply.offset)

    async def cid_pages(
        self, participant: str, file_id: str, page_token: str = "", page_size: int = 0
    ) -> AsyncIterator[CIDPage]:
        """The file's CIDs, a page at a time, streamed; resume from the last page's `next_page_token`."""
        stream = self._stub.StreamCIDList(
            pb.StreamCIDListRequest(
                participant=participant, file_id=file_id, page_token=page_token, page_size=page_size
            ),
            timeout=self.stream_deadline,
            metadata=_trace_metadata(),
        )
        try:
            async for reply in stream:
                yield CIDPage(cids=list(reply.cids), next_page_token=reply.next_page_token, offset=reply.offset)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, "StreamCIDList") from None
        finally:
            stream.cancel()

    async def get_entry_by_cid(self, participant: str, cid: str) -> EntryByCID:
        await self._spend(participant, "GetEntryByCid")
        reply: pb.GetEntryByCidResponse = await self._call(
            "GetEntryByCid",
            self._stub.GetEntryByCid,
            pb.GetEntryByCidRequest(participant=participant, cid=cid),
        )
        return EntryByCID(entry=convert.entry_from_pb(reply.entry), request_id=UUID(reply.request_id), cid=reply.cid)

    async def get_rate_limit_bucket(self, participant: str, operation: str) -> RateLimitBucket:
        """The state of the bucket `operation` (a contract method, e.g. "CreateCidSetFile") spends."""
        reply: pb.RateLimitBucket = await self._call(
            "GetRateLimitBucket",
            self._stub.GetRateLimitBucket,
            pb.GetRateLimitBucketRequest(participant=participant, operation=operation),
        )
        return convert.bucket_from_pb(reply)

    async def list_cid_set_events(
        self, participant: str, key_type: KeyType, start: datetime, end: datetime, limit: int = 200
    ) -> CIDSetEvents:
        await self._spend(participant, "ListCidSetEvents")
        reply: pb.ListCidSetEventsResponse = await self._call(
            "ListCidSetEvents",
            self._stub.ListCidSetEvents,
            pb.ListCidSetEventsRequest(
                participant=participant,
                key_type=convert.key_type_to_pb(key_type),
                start_time=convert.timestamp(start),
                end_time=convert.timestamp(end),
                limit=limit,
            ),
        )
        kinds = {pb.CID_EVENT_TYPE_ADDED: CIDEventType.ADDED, pb.CID_EVENT_TYPE_REMOVED: CIDEventType.REMOVED}
        events = [
            CIDSetEvent(type=kinds[e.type], cid=e.cid, timestamp=convert.moment(e.timestamp)) for e in reply.events
        ]
        return CIDSetEvents(
            events=events,
            has_more=reply.has_more,
            verifier_start=reply.sync_verifier_start,
            verifier_end=reply.sync_verifier_end,
        )


__all__ = ["BridgeClient", "BridgeError", "ClientTls"]
