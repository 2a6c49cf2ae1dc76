"""The DICT simulator: the Bridge contract served from memory, plus its admin service.

Faithful where it matters to callers: DICT's CID algorithm (ours), its rate limits with retry-after,
asynchronous CID files, and the contract's status codes. Faults (UNAVAILABLE, latency) and divergence
are injected through `DictSimulatorAdmin`, which is not part of the production contract.

Each call is handled in this order: counted, delayed, injected fault, request checks
(INVALID_ARGUMENT), participant check (PERMISSION_DENIED), rate limit (RESOURCE_EXHAUSTED), then served.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from cidsync.bridge import convert
from cidsync.bridge.errors import RETRY_AFTER
from cidsync.bridge.models import CIDEventType, FileStatus, RateLimitBucket
from cidsync.bridge.serving import (
    MAX_EVENTS,
    SERVER_OPTIONS,
    offset_of,
    page_size,
    page_token,
    participant_of,
)
from cidsync.bridge.v2 import bridge_pb2 as pb
from cidsync.bridge.v2 import bridge_pb2_grpc
from cidsync.cid import check_cid, is_cid
from cidsync.dict_api.policies import OPERATION_OF_METHOD, POLICY_OF
from cidsync.entry import Entry, parse_entry_json, parse_jsonl_entries
from cidsync.errors import InvalidInput, Problem
from cidsync_tooling.simulator.admin_client import CHANGE_KINDS_PB, OUTCOMES_FROM_PB
from cidsync_tooling.simulator.dict_state import SimFile, SimulatedDict
from cidsync_tooling.simulator.journal import Journal
from cidsync_tooling.simulator.ratelimit import RateLimiter
from cidsync_tooling.simulator.v1 import admin_pb2, admin_pb2_grpc

CHANGE_KINDS = {pb_kind: kind for kind, pb_kind in CHANGE_KINDS_PB.items()}
OUTCOMES = {outcome: pb_outcome for pb_outcome, outcome in OUTCOMES_FROM_PB.items()}

Request = TypeVar("Request")
Reply = TypeVar("Reply")


@dataclass
class Faults:
    unavailable_ratio: float = 0.0
    latency_ms: int = 0
    fail_next: Counter[str] = field(default_factory=Counter)
    file_outcome: FileStatus = FileStatus.AVAILABLE
    page_delay_ms: int = 0


class Simulator:
    """The state behind both services: the DICT, the limits, the faults and the counters."""

    def __init__(
        self,
        *,
        file_delay: float = 2.0,
        file_delay_per_cid: float = 0.0,
        event_delay: float = 0.0,
        event_jitter: float = 0.0,
        time_scale: float = 1.0,
        rate_limits: bool = True,
        participants: frozenset[str] = frozenset(),
        seed: int | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.journal = journal
        self.dict = SimulatedDict()
        self.restored = journal.restore(self.dict) if journal else 0
        self.file_delay = file_delay
        self.file_delay_per_cid = file_delay_per_cid
        self._random = random.Random(seed)
        # DICT's log shows a change `event_delay` seconds after it, give or take up to `event_jitter`.
        self._event_delay = lambda: max(event_delay + self._random.uniform(-event_jitter, event_jitter), 0.0)
        self.dict.event_delay = self._event_delay
        self.limiter = RateLimiter(time_scale=time_scale, enabled=rate_limits)
        self.participants = participants
        self.faults = Faults()
        self.calls: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.injected_unavailable: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.dict = SimulatedDict()
        self.dict.event_delay = self._event_delay
        if self.journal is not None:
            self.journal.clear()
            self.dict.record = self.journal.append
        self.limiter.reset()
        self.faults = Faults()
        self.calls.clear()
        self.rate_limited.clear()
        self.injected_unavailable.clear()

    async def unavailable_now(self, method: str) -> bool:
        """A call to `method` arrives: count it, wait the injected latency, and say whether an injected
        unavailability refuses it (both faces, gRPC and DICT API, ask this)."""
        self.calls[method] += 1
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        injected = self.faults.fail_next[method] > 0
        if injected:
            self.faults.fail_next[method] -= 1
        elif self.faults.unavailable_ratio:
            injected = self._random.random() < self.faults.unavailable_ratio
        if injected:
            self.injected_unavailable[method] += 1
        return injected

    def allowed(self, participant: str) -> bool:
        return not self.participants or participant in self.participants

    def limited(self, participant: str, method: str) -> float | None:
        """None when the participant's bucket for `method` had a token, else the seconds until it has one."""
        wait = self.limiter.check(participant, method)
        if wait is not None:
            self.rate_limited[method] += 1
        return wait

    def bucket(self, participant: str, method: str) -> RateLimitBucket:
        """The participant's bucket for the contract's `method` now, as DICT states one (both faces)."""
        state = self.limiter.state(participant, method)
        tokens, capacity, refill, period = (
            (0, 0, 0, 0) if state is None else (state[0], int(state[1].capacity), *_refill(state[1].refill_per_second))
        )
        return RateLimitBucket(
            policy=POLICY_OF[OPERATION_OF_METHOD[method]],
            available_tokens=tokens,
            capacity=capacity,
            refill_tokens=refill,
            refill_period_seconds=period,
            observed_at=SimulatedDict.now(),
        )

    async def enter(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        if await self.unavailable_now(method):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected fault: DICT unavailable")

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str, participant: str) -> None:
        if not self.allowed(participant):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"not allowed to act for participant {participant}")
        wait = self.limited(participant, method)
        if wait is not None:
            context.set_trailing_metadata(((RETRY_AFTER, f"{wait:.3f}"),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: rate limit of DICT reached")

    def generate(self, file: SimFile, outcome: FileStatus) -> None:
        """Produce the file in the background, as DICT does: REQUESTED for half the base delay, then the
        snapshot of the set (the file's CreationTime) and PROCESSING for the other half plus the per-CID
        time, then the outcome. A file of a large set takes longer, and the set keeps changing meanwhile."""

        async def run() -> None:
            await asyncio.sleep(self.file_delay / 2)
            self.dict.snapshot(file, SimulatedDict.now(), outcome)
            await asyncio.sleep(self.file_delay / 2 + self.file_delay_per_cid * len(file.cids))
            await asyncio.to_thread(file.seal, outcome, SimulatedDict.now())

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _refill(per_second: float) -> tuple[int, int]:
    """(tokens, period in seconds) of a refill rate, as DICT states it (10 a minute: 10 every 60 s)."""
    per_minute = per_second * 60
    if per_minute >= 1:
        return round(per_minute), 60
    return round(per_second * 86_400), 86_400


def _entry(raw: str, where: str) -> Entry:
    """One entry of a list in a request; its problems named after its place in the list."""
    try:
        return parse_entry_json(raw)
    except InvalidInput as error:
        raise InvalidInput(where, error.problems) from None


def _file_pb(file: SimFile) -> pb.CidSetFile:
    message = pb.CidSetFile(
        file_id=file.file_id,
        participant=file.participant,
        key_type=convert.key_type_to_pb(file.key_type),
        status=convert.file_status_to_pb(file.status),
        requested_at=convert.timestamp(file.requested_at),
    )
    if file.created_at is not None:
        message.created_at.CopyFrom(convert.timestamp(file.created_at))
    if file.status is FileStatus.AVAILABLE and file.available_at is not None:
        message.cid_count = len(file.cids)
        message.byte_size = file.byte_size
        message.sha256 = file.sha256
        message.available_at.CopyFrom(convert.timestamp(file.available_at))
    return message


def _unary(
    method: str,
) -> Callable[
    [Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Reply]]],
    Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Reply]],
]:
    """Count and fault the call, and turn `InvalidInput` into INVALID_ARGUMENT."""

    def wrap(
        handler: Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Reply]],
    ) -> Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Reply]]:
        async def call(self: Any, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Reply:
            await self.sim.enter(context, method)
            try:
                return await handler(self, request, context)
            except InvalidInput as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.summary())
                raise  # unreachable: abort raises

        return call

    return wrap


class DictBridgeService(bridge_pb2_grpc.DictBridgeServicer):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @_unary("VerifySync")
    async def VerifySync(  # noqa: N802 (the contract's name)
        self, request: pb.VerifySyncRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.VerifySyncResponse:
        participant = participant_of(request.participant)
        key_type = convert.key_type_from_pb(request.key_type)
        theirs = check_cid(request.participant_vsync) if request.participant_vsync else ""
        if not theirs:
            raise InvalidInput("request", [Problem("participant_vsync", "is required (64 lowercase hex digits)")])
        await self.sim.admit(context, "VerifySync", participant)
        ok = self.sim.dict.vsync((participant, key_type)) == theirs
        return pb.VerifySyncResponse(
            verification_id=str(uuid.uuid4()),
            result=pb.VERIFICATION_RESULT_OK if ok else pb.VERIFICATION_RESULT_NOK,
            verified_at=convert.timestamp(SimulatedDict.now()),
        )

    @_unary("CreateCidSetFile")
    async def CreateCidSetFile(  # noqa: N802
        self, request: pb.CreateCidSetFileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CidSetFile:
        participant = participant_of(request.participant)
        key_type = convert.key_type_from_pb(request.key_type)
        # A repeated idempotency key returns the first file and spends nothing (checked before the
        # rate limit: a retry of a request that got through must not be refused for quota).
        known = self.sim.dict.file_requests.get((participant, request.request_id)) if request.request_id else None
        if known is not None:
            file = self.sim.dict.files[known]
            if file.key_type is not key_type:
                raise InvalidInput("request", [Problem("request_id", "was used for another key type")])
            return _file_pb(file)
        await self.sim.admit(context, "CreateCidSetFile", participant)
        outcome = self.sim.faults.file_outcome
        file = self.sim.dict.new_file(participant, key_type, SimulatedDict.now(), request.request_id)
        self.sim.generate(file, outcome)
        return _file_pb(file)

    async def _file(self, participant: str, file_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> SimFile:
        """The participant's file, as DICT finds it: another participant's file is not found."""
        file = self.sim.dict.files.get(file_id)
        if file is None or file.participant != participant:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no CID file {file_id} of participant {participant}")
        assert file is not None
        return file

    @_unary("GetCidSetFile")
    async def GetCidSetFile(  # noqa: N802
        self, request: pb.GetCidSetFileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CidSetFile:
        participant = participant_of(request.participant)
        await self.sim.admit(context, "GetCidSetFile", participant)
        return _file_pb(await self._file(participant, request.file_id, context))

    async def _available(self, participant: str, file_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> SimFile:
        if not self.sim.allowed(participant):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not allowed to read this file")
        file = await self._file(participant, file_id, context)
        if file.status is not FileStatus.AVAILABLE:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"the file is {file.status.value}, not AVAILABLE")
        return file

    @staticmethod
    def _page(file: SimFile, offset: int, size: int) -> pb.CidPage:
        end = min(offset + size, len(file.cids))
        token = page_token(file.file_id, end) if end < len(file.cids) else ""
        return pb.CidPage(cids=file.cids[offset:end], next_page_token=token, offset=offset)

    @_unary("GetCIDList")
    async def GetCIDList(  # noqa: N802
        self, request: pb.GetCIDListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CidPage:
        file = await self._available(participant_of(request.participant), request.file_id, context)
        page = self._page(file, offset_of(file.file_id, request.page_token), page_size(request.page_size))
        await self._page_delay()
        return page

    async def _page_delay(self) -> None:
        if self.sim.faults.page_delay_ms:
            await asyncio.sleep(self.sim.faults.page_delay_ms / 1000)

    async def StreamCIDList(  # noqa: N802
        self, request: pb.StreamCIDListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CidPage]:
        await self.sim.enter(context, "StreamCIDList")
        try:
            participant = participant_of(request.participant)
        except InvalidInput as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.summary())
        file = await self._available(participant, request.file_id, context)
        try:
            offset = offset_of(file.file_id, request.page_token)
            size = page_size(request.page_size)
        except InvalidInput as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.summary())
        while True:
            page = self._page(file, offset, size)
            await self._page_delay()
            yield page
            if not page.next_page_token:
                return
            offset += len(page.cids)

    @_unary("GetEntryByCid")
    async def GetEntryByCid(  # noqa: N802
        self, request: pb.GetEntryByCidRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetEntryByCidResponse:
        participant = participant_of(request.participant)
        value = check_cid(request.cid)
        await self.sim.admit(context, "GetEntryByCid", participant)
        entry = self.sim.dict.find(participant, value)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no active entry of this participant has that CID")
        assert entry is not None
        return pb.GetEntryByCidResponse(entry=convert.entry_to_pb(entry), request_id=str(entry.request_id), cid=value)

    @_unary("ListCidSetEvents")
    async def ListCidSetEvents(  # noqa: N802
        self, request: pb.ListCidSetEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCidSetEventsResponse:
        participant = participant_of(request.participant)
        key_type = convert.key_type_from_pb(request.key_type)
        if not 1 <= request.limit <= MAX_EVENTS:
            raise InvalidInput("request", [Problem("limit", f"must be 1 to {MAX_EVENTS}")])
        start, end = convert.moment(request.start_time), convert.moment(request.end_time)
        if not request.HasField("end_time"):
            end = SimulatedDict.now()
        if end <= start:
            raise InvalidInput("request", [Problem("end_time", "must be after start_time")])
        await self.sim.admit(context, "ListCidSetEvents", participant)
        page = self.sim.dict.events((participant, key_type), start, end, request.limit)
        kinds = {CIDEventType.ADDED: pb.CID_EVENT_TYPE_ADDED, CIDEventType.REMOVED: pb.CID_EVENT_TYPE_REMOVED}
        events = [
            pb.CidSetEvent(type=kinds[kind], cid=value, timestamp=convert.timestamp(moment))
            for moment, kind, value in page.events
        ]
        return pb.ListCidSetEventsResponse(
            events=events,
            has_more=page.has_more,
            sync_verifier_start=page.verifier_start,
            sync_verifier_end=page.verifier_end,
        )

    @_unary("GetRateLimitBucket")
    async def GetRateLimitBucket(  # noqa: N802
        self, request: pb.GetRateLimitBucketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RateLimitBucket:
        participant = participant_of(request.participant)
        if request.operation not in OPERATION_OF_METHOD:
            known = ", ".join(sorted(OPERATION_OF_METHOD))
            raise InvalidInput("request", [Problem("operation", f"must be one of {known}")])
        if not self.sim.allowed(participant):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"not allowed to act for participant {participant}")
        return convert.bucket_to_pb(self.sim.bucket(participant, request.operation))


class AdminService(admin_pb2_grpc.DictSimulatorAdminServicer):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def _invalid(self, context: grpc.aio.ServicerContext[Any, Any], error: InvalidInput) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.summary())

    async def LoadEntries(  # noqa: N802
        self, request: admin_pb2.LoadEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.LoadEntriesResponse:
        try:
            entries = [_entry(raw, f"entry #{i}") for i, raw in enumerate(request.entry_json, start=1)]
            now = SimulatedDict.now()
            cids = [self.sim.dict.register(entry, now) for entry in entries]
        except InvalidInput as error:
            await self._invalid(context, error)
        return admin_pb2.LoadEntriesResponse(loaded=len(cids), cids=cids)

    async def RemoveEntries(  # noqa: N802
        self, request: admin_pb2.RemoveEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.RemoveEntriesResponse:
        now = SimulatedDict.now()
        missing = [v for v in request.cids if not (is_cid(v) and self.sim.dict.remove(v, now))]
        return admin_pb2.RemoveEntriesResponse(removed=len(request.cids) - len(missing), not_found=missing)

    async def AlterEntry(  # noqa: N802
        self, request: admin_pb2.AlterEntryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.AlterEntryResponse:
        try:
            old, new = self.sim.dict.alter(parse_entry_json(request.entry_json), SimulatedDict.now())
        except InvalidInput as error:
            await self._invalid(context, error)
        return admin_pb2.AlterEntryResponse(old_cid=old, new_cid=new)

    async def ApplyChanges(  # noqa: N802
        self, request: admin_pb2.ApplyChangesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ApplyChangesResponse:
        try:
            changes = []
            for index, change in enumerate(request.changes):
                if change.kind not in CHANGE_KINDS:
                    raise InvalidInput(f"change #{index + 1}", [Problem("kind", "must be CREATED, UPDATED or DELETED")])
                changes.append((CHANGE_KINDS[change.kind], _entry(change.entry_json, f"change #{index + 1}")))
        except InvalidInput as error:
            await self._invalid(context, error)
        now = SimulatedDict.now()
        results = [self.sim.dict.apply_change(kind, entry, now) for kind, entry in changes]
        return admin_pb2.ApplyChangesResponse(
            results=[admin_pb2.ChangeResult(outcome=OUTCOMES[outcome], reason=reason) for outcome, reason in results]
        )

    async def InjectDivergence(  # noqa: N802
        self, request: admin_pb2.InjectDivergenceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.InjectDivergenceResponse:
        try:
            pair = (participant_of(request.participant), convert.key_type_from_pb(request.key_type))
            added, removed, altered = self.sim.dict.diverge(
                pair,
                add=request.add,
                remove=request.remove,
                alter=request.alter,
                seed=request.seed,
                now=SimulatedDict.now(),
            )
        except InvalidInput as error:
            await self._invalid(context, error)
        return admin_pb2.InjectDivergenceResponse(
            added=added,
            removed=removed,
            altered_old=[o for o, _ in altered],
            altered_new=[n for _, n in altered],
        )

    async def LoadSynthetic(  # noqa: N802
        self, request: admin_pb2.LoadSyntheticRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.LoadSyntheticResponse:
        try:
            pair = (participant_of(request.participant), convert.key_type_from_pb(request.key_type))
            if request.count < 0:
                raise InvalidInput("request", [Problem("count", "must not be negative")])
        except InvalidInput as error:
            await self._invalid(context, error)
        loaded = await asyncio.to_thread(self.sim.dict.load_synthetic, pair, request.count, request.seed)
        return admin_pb2.LoadSyntheticResponse(loaded=loaded, vsync=self.sim.dict.vsync(pair))

    async def SetFaults(  # noqa: N802
        self, request: admin_pb2.Faults, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.Faults:
        if not 0 <= request.unavailable_ratio <= 1 or request.latency_ms < 0 or request.page_delay_ms < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "unavailable_ratio is 0..1, latency_ms and page_delay_ms >= 0"
            )
        outcome = FileStatus.AVAILABLE
        if request.file_outcome != pb.CID_SET_FILE_STATUS_UNSPECIFIED:
            outcome = convert.file_status_from_pb(request.file_outcome)
        self.sim.faults = Faults(
            unavailable_ratio=request.unavailable_ratio,
            latency_ms=request.latency_ms,
            fail_next=Counter(dict(request.fail_next)),
            file_outcome=outcome,
            page_delay_ms=request.page_delay_ms,
        )
        return request

    async def GetStats(  # noqa: N802
        self, request: admin_pb2.GetStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.Stats:
        return admin_pb2.Stats(
            calls=dict(self.sim.calls),
            rate_limited=dict(self.sim.rate_limited),
            injected_unavailable=dict(self.sim.injected_unavailable),
            entries=self.sim.dict.entry_count(),
            files_created=len(self.sim.dict.files),
        )

    async def Reset(  # noqa: N802
        self, request: admin_pb2.ResetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ResetResponse:
        self.sim.reset()
        return admin_pb2.ResetResponse()


@dataclass(frozen=True)
class ServerTls:
    """Server certificate and key (PEM); with `client_ca`, clients must present a certificate (mTLS)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: Path, key: Path, client_ca: Path | None = None) -> ServerTls:
        return cls(cert.read_bytes(), key.read_bytes(), client_ca.read_bytes() if client_ca else None)


async def start_server(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, tls: ServerTls | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start both services; return the server and the port it listens on (a free one for port 0)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    bridge_pb2_grpc.add_DictBridgeServicer_to_server(DictBridgeService(sim), server)
    admin_pb2_grpc.add_DictSimulatorAdminServicer_to_server(AdminService(sim), server)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None,
        )
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot listen on {address}: the port is taken or the address is not local")
    await server.start()
    return server, bound


def load_seed(sim: Simulator, path: Path) -> int:
    """Register the entries of a JSONL file (one event-contract `entry` per line)."""
    now = SimulatedDict.now()
    with path.open(encoding="utf-8") as lines:
        return sum(1 for entry in parse_jsonl_entries(lines, path.name) if sim.dict.register(entry, now))
