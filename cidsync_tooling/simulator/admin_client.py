"""A client of the simulator's admin service, for tests, the demo and `cidsync bridge-sim admin`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from cidsync.bridge import convert
from cidsync.bridge.errors import from_rpc_error
from cidsync.bridge.models import FileStatus
from cidsync.config import NotConfigured, dev_stack_endpoints
from cidsync.entry import Entry, KeyType
from cidsync.events import EventType
from cidsync_tooling.simulator.dict_state import ChangeOutcome
from cidsync_tooling.simulator.v1 import admin_pb2, admin_pb2_grpc

LOAD_BATCH = 1_000
# The admin contract's enums for core's changes; the server reads them back through the same maps.
CHANGE_KINDS_PB = {
    EventType.CREATED: admin_pb2.CHANGE_KIND_CREATED,
    EventType.UPDATED: admin_pb2.CHANGE_KIND_UPDATED,
    EventType.DELETED: admin_pb2.CHANGE_KIND_DELETED,
}
OUTCOMES_FROM_PB = {
    admin_pb2.CHANGE_OUTCOME_APPLIED: ChangeOutcome.APPLIED,
    admin_pb2.CHANGE_OUTCOME_ALREADY: ChangeOutcome.ALREADY,
    admin_pb2.CHANGE_OUTCOME_REFUSED: ChangeOutcome.REFUSED,
}


SIMULATOR_ADDRESS_VARIABLE = "CIDSYNC_SIMULATOR_ADDRESS"


def simulator_address(explicit: str | None = None) -> str:
    """The simulator to drive: `explicit` (a flag), else `$CIDSYNC_SIMULATOR_ADDRESS`, else the running dev
    stack's. Not `CIDSYNC_BRIDGE_ADDRESS`: on the dev stack that is `bridge serve`, which has no admin calls."""
    found = explicit or os.environ.get(SIMULATOR_ADDRESS_VARIABLE) or dev_stack_endpoints().get("simulator_address")
    if not found:
        raise NotConfigured(
            f"no simulator address: set {SIMULATOR_ADDRESS_VARIABLE}, pass --simulator-address, "
            "or start the embedded stack with `cidsync dev up`"
        )
    return found


class SimulatorAdmin:
    def __init__(self, address: str, deadline: float = 60.0) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = admin_pb2_grpc.DictSimulatorAdminStub(self._channel)
        self.deadline = deadline

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> SimulatorAdmin:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self.deadline)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, method) from None

    async def load(self, entries: Iterable[Entry]) -> list[str]:
        """Register entries as active in DICT; returns their CIDs, in order."""
        cids: list[str] = []
        batch: list[str] = []
        for entry in entries:
            batch.append(entry.model_dump_json())
            if len(batch) == LOAD_BATCH:
                cids += (await self._call("LoadEntries", admin_pb2.LoadEntriesRequest(entry_json=batch))).cids
                batch = []
        if batch:
            cids += (await self._call("LoadEntries", admin_pb2.LoadEntriesRequest(entry_json=batch))).cids
        return cids

    async def remove(self, cids: Iterable[str]) -> tuple[int, list[str]]:
        reply = await self._call("RemoveEntries", admin_pb2.RemoveEntriesRequest(cids=list(cids)))
        return int(reply.removed), list(reply.not_found)

    async def apply_changes(self, changes: Sequence[tuple[EventType, Entry]]) -> list[tuple[ChangeOutcome, str]]:
        """Core's side of entry events, in commit order (`ApplyChanges`): each change's outcome and, when
        DICT refused it, why."""
        results: list[tuple[ChangeOutcome, str]] = []
        for start in range(0, len(changes), LOAD_BATCH):
            request = admin_pb2.ApplyChangesRequest(
                changes=[
                    admin_pb2.EntryChange(kind=CHANGE_KINDS_PB[kind], entry_json=entry.model_dump_json())
                    for kind, entry in changes[start : start + LOAD_BATCH]
                ]
            )
            reply = await self._call("ApplyChanges", request)
            results += [(OUTCOMES_FROM_PB[r.outcome], r.reason) for r in reply.results]
        return results

    async def alter(self, entry: Entry) -> tuple[str, str]:
        reply = await self._call("AlterEntry", admin_pb2.AlterEntryRequest(entry_json=entry.model_dump_json()))
        return str(reply.old_cid), str(reply.new_cid)

    async def diverge(
        self,
        participant: str,
        key_type: KeyType,
        *,
        add: int = 0,
        remove: int = 0,
        alter: int = 0,
        seed: int = 0,
    ) -> admin_pb2.InjectDivergenceResponse:
        request = admin_pb2.InjectDivergenceRequest(
            participant=participant,
            key_type=convert.key_type_to_pb(key_type),
            add=add,
            remove=remove,
            alter=alter,
            seed=seed,
        )
        reply: admin_pb2.InjectDivergenceResponse = await self._call("InjectDivergence", request)
        return reply

    async def load_synthetic(self, participant: str, key_type: KeyType, count: int, seed: int = 0) -> tuple[int, str]:
        """Generate `count` entries inside the simulator; returns how many were loaded and the VSync."""
        request = admin_pb2.LoadSyntheticRequest(
            participant=participant, key_type=convert.key_type_to_pb(key_type), count=count, seed=seed
        )
        reply = await self._call("LoadSynthetic", request)
        return int(reply.loaded), str(reply.vsync)

    async def set_faults(
        self,
        *,
        unavailable_ratio: float = 0.0,
        latency_ms: int = 0,
        fail_next: Mapping[str, int] | None = None,
        file_outcome: FileStatus = FileStatus.AVAILABLE,
        page_delay_ms: int = 0,
    ) -> None:
        """Replace every fault setting (the defaults mean: no faults)."""
        await self._call(
            "SetFaults",
            admin_pb2.Faults(
                unavailable_ratio=unavailable_ratio,
                latency_ms=latency_ms,
                fail_next=dict(fail_next or {}),
                file_outcome=convert.file_status_to_pb(file_outcome),
                page_delay_ms=page_delay_ms,
            ),
        )

    async def stats(self) -> dict[str, Any]:
        reply = await self._call("GetStats", admin_pb2.GetStatsRequest())
        return {
            "calls": dict(reply.calls),
            "rate_limited": dict(reply.rate_limited),
            "injected_unavailable": dict(reply.injected_unavailable),
            "entries": int(reply.entries),
            "files_created": int(reply.files_created),
        }

    async def reset(self) -> None:
        await self._call("Reset", admin_pb2.ResetRequest())
