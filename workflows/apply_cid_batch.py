"""ApplyCIDBatch: many events in one run, for throughput (the starter's batch mode).

One workflow per event costs the dev server ~20 ms of its own work (docs/development.md: 40-70 runs/s here); a
batch of 100 costs about the same as one. Correctness does not depend on the grouping: every change is
its own versioned apply, so any regrouping of redelivered events gives the same state. WAITING_PERIOD
deletes never come here: they need their own durable wait (DeleteCID). The input is the starter's
minimal changes, never the entries (docs/design.md §5).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.versioning import SHORT_RUN

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import StoreActivities
    from cidsync.change import CIDBatch
    from cidsync.events import DeletionType
    from cidsync.store.models import BatchResult
    from workflows.policies import INVALID_INPUT, STORE_RETRY, STORE_TIMEOUT


@workflow.defn(versioning_behavior=SHORT_RUN)
class ApplyCIDBatch:
    @workflow.run
    async def run(self, batch: CIDBatch) -> BatchResult:
        if any(c.deletion_type is DeletionType.WAITING_PERIOD for c in batch.changes):
            raise ApplicationError("a WAITING_PERIOD delete cannot be batched", type=INVALID_INPUT, non_retryable=True)
        # A local activity: the apply runs in this worker, straight after the workflow task, with no
        # activity task through the server and no second copy of the batch in history (only the result
        # is recorded). The server is what limits ingestion here (docs/development.md); retries are the same policy.
        result = await workflow.execute_local_activity_method(
            StoreActivities.apply_batch,
            batch,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary=f"apply {len(batch.changes)} changes to the CID store",
        )
        workflow.set_current_details(
            f"{len(batch.changes)} events: {result.applied} applied, {result.duplicate} duplicate, {result.stale} stale"
        )
        return result
