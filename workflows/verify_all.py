"""VerifyAllPairs: what the daily Schedule runs. It starts (or joins) every pair's ReconcileVSync.

It does not wait for them: each reconciliation is its own durable run with its own outcome, and one
pair's long repair or pending approval must not hold the others back.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.schedule import ScheduleActivities, StartReconciliation
    from cidsync.entry import PairRef
    from workflows.reconcile_vsync import ReconcileInput


class VerifyAllInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    pairs: list[PairRef]
    divergence_threshold: int = 100


@workflow.defn
class VerifyAllPairs:
    @workflow.run
    async def run(self, input: VerifyAllInput) -> list[str]:
        workflow.set_current_details(f"starting the verification of {len(input.pairs)} (participant, key type)")
        started = []
        for pair in input.pairs:
            request = ReconcileInput(
                participant=pair.participant,
                key_type=pair.key_type,
                trigger="schedule",
                divergence_threshold=input.divergence_threshold,
            )
            started.append(
                await workflow.execute_activity_method(
                    ScheduleActivities.start_reconciliation,
                    StartReconciliation(request=request),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=20),
                )
            )
        workflow.set_current_details(f"started or joined {len(started)} reconciliations")
        return started
