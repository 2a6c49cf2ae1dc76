"""ApplyCIDBatch: many events in one run, for throughput (the starter's batch mode).

One workflow per event costs the dev server ~20 ms of its own work (PERF.md: 40-70 runs/s here); a
batch of 100 costs about the same as one. Correctness does not depend on the grouping: every change is
its own versioned apply, so any regrouping of redelivered events gives the same state. WAITING_PERIOD
deletes never come here: they need their own durable wait (DeleteCID).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import BatchResult, CIDBatch, CIDStore
    from cidsync.events import DeletionType, EntryEvent
    from workflows.cid_change import STORE_RETRY, STORE_TIMEOUT, change_for


class CIDBatchInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    events: list[EntryEvent]


@workflow.defn
class ApplyCIDBatch:
    @workflow.run
    async def run(self, input: CIDBatchInput) -> BatchResult:
        if any(e.deletion_type is DeletionType.WAITING_PERIOD for e in input.events):
            raise ApplicationError("a WAITING_PERIOD delete cannot be batched", type="InvalidInput", non_retryable=True)
        result = await workflow.execute_activity_method(
            CIDStore.apply_batch,
            CIDBatch(changes=[change_for(event) for event in input.events]),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        workflow.set_current_details(f"{len(input.events)} events: {result.applied} applied, {result.stale} stale")
        return result
