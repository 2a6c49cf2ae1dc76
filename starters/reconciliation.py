"""Starting a reconciliation, from the CLI or the schedule: one per (participant, key type) at a time.

The workflow id is the pair's, and USE_EXISTING makes a second trigger join the running one instead of
failing or starting a rival (which would race it for the same scratch keys and DICT quota). A finished
run's id may be reused: the next verification is a new run.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from cidsync.naming import reconcile_search_attributes, reconcile_summary, reconcile_workflow_id
from workflows.reconcile_vsync import ReconcileInput, ReconcileResult, ReconcileVSync


async def start_reconciliation(
    client: Client, request: ReconcileInput, task_queue: str
) -> WorkflowHandle[ReconcileVSync, ReconcileResult]:
    return await client.start_workflow(
        ReconcileVSync.run,
        request,
        id=reconcile_workflow_id(request.participant, request.key_type),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=reconcile_search_attributes(request.participant, request.key_type),
        static_summary=reconcile_summary(request.participant, request.key_type, request.trigger),
    )
