"""The scheduled verification's one side effect: starting (or joining) each pair's ReconcileVSync.

A Temporal Schedule appends a timestamp to the ids of the workflows it starts, so it cannot start
ReconcileVSync itself without breaking "one per pair at a time": it starts VerifyAllPairs, whose
activity starts each pair's run under the pair's own id with USE_EXISTING.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.client import Client

from starters.reconciliation import start_reconciliation
from workflows.reconcile_vsync import ReconcileInput


class StartReconciliation(BaseModel):
    model_config = ConfigDict(frozen=True)

    request: ReconcileInput


class ScheduleActivities:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    @activity.defn(name="start_reconciliation")
    async def start_reconciliation(self, start: StartReconciliation) -> str:
        """The run id of the pair's reconciliation: a new one, or the one already running."""
        handle = await start_reconciliation(self.client, start.request, self.task_queue)
        return handle.result_run_id or ""
