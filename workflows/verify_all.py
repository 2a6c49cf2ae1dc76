"""VerifyAllPairs: what the daily Schedule runs. It starts (or joins) every pair's ReconcileVSync.

A Temporal Schedule appends a timestamp to the ids of the workflows it starts, so it cannot start
ReconcileVSync itself without breaking "one per pair at a time". This workflow starts each pair's run as
a child under the pair's own id, with an ABANDON parent-close policy: it does not wait for them, since
each reconciliation is its own durable run with its own outcome, and one pair's long repair or pending
approval must not hold the others back. A pair whose reconciliation is already running (from the CLI,
or yesterday's still awaiting approval) is joined, not doubled: "already started" counts as done.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from workflows.versioning import LONG_WAIT

with workflow.unsafe.imports_passed_through():
    from cidsync.entry import PairRef
    from cidsync.naming import reconcile_workflow_id
    from workflows.reconcile_vsync import ReconcileInput, start_or_join


class VerifyAllInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    pairs: list[PairRef]
    divergence_threshold: int = 100


class VerifyAllResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    started: list[str]  # workflow ids of the reconciliations this run started
    joined: list[str]  # ... and of those already running, left to finish


@workflow.defn(versioning_behavior=LONG_WAIT)
class VerifyAllPairs:
    @workflow.run
    async def run(self, input: VerifyAllInput) -> VerifyAllResult:
        workflow.set_current_details(f"starting the verification of {len(input.pairs)} (participant, key type)")
        started: list[str] = []
        joined: list[str] = []
        for pair in input.pairs:
            request = ReconcileInput(
                participant=pair.participant,
                key_type=pair.key_type,
                trigger="schedule",
                divergence_threshold=input.divergence_threshold,
            )
            workflow_id = reconcile_workflow_id(pair.participant, pair.key_type)
            (started if await start_or_join(request) else joined).append(workflow_id)
        workflow.set_current_details(f"started {len(started)} reconciliations, joined {len(joined)} already running")
        return VerifyAllResult(started=started, joined=joined)
