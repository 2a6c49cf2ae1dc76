"""CreateCID: one run per `entry.created` event."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cidsync.events import EventType
    from workflows.cid_change import CIDEventInput, CIDResult, apply, expect


@workflow.defn
class CreateCID:
    @workflow.run
    async def run(self, input: CIDEventInput) -> CIDResult:
        expect(input.event, EventType.CREATED)
        return await apply(input.event)
