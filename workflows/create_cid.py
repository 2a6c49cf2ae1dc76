"""CreateCID: one run per `entry.created` event."""

from __future__ import annotations

from temporalio import workflow

from workflows.versioning import SHORT_RUN

with workflow.unsafe.imports_passed_through():
    from cidsync.change import CIDChange
    from cidsync.events import EventType
    from workflows.cid_change import CIDResult, apply, expect


@workflow.defn(versioning_behavior=SHORT_RUN)
class CreateCID:
    @workflow.run
    async def run(self, change: CIDChange) -> CIDResult:
        expect(change, EventType.CREATED)
        return await apply(change)
