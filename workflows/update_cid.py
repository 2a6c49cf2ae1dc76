"""UpdateCID: one run per `entry.updated` event; the old CID leaves and the new one joins, atomically."""

from __future__ import annotations

from temporalio import workflow

from workflows.versioning import SHORT_RUN

with workflow.unsafe.imports_passed_through():
    from cidsync.change import CIDChange
    from cidsync.events import EventType
    from workflows.cid_change import CIDResult, apply, expect


@workflow.defn(versioning_behavior=SHORT_RUN)
class UpdateCID:
    @workflow.run
    async def run(self, change: CIDChange) -> CIDResult:
        expect(change, EventType.UPDATED)
        return await apply(change)
