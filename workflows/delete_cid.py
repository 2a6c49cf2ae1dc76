"""DeleteCID: one run per `entry.deleted` event. A WAITING_PERIOD delete waits durably first.

DICT keeps a key in its waiting period (30 days by default) before it goes. The wait is a durable
timer, so worker restarts do not shorten or lose it. A newer event for the key makes the delete a
no-op: the versioned apply would refuse it anyway (its sequence is older), and the run checks the
store every `recheck_every` so it ends early, as `superseded`, instead of idling for the full period.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from workflows.versioning import LONG_WAIT

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import KeySequenceQuery, StoreActivities
    from cidsync.change import CIDChange
    from cidsync.events import DeletionType, EventType
    from cidsync.naming import PHASE
    from workflows.cid_change import CIDResult, apply, expect
    from workflows.policies import PHASE_SEARCH_ATTRIBUTE, STORE_RETRY, STORE_TIMEOUT

DEFAULT_WAITING_PERIOD = timedelta(days=30)
DEFAULT_RECHECK_EVERY = timedelta(days=1)


class DeleteCIDInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    change: CIDChange
    waiting_period: timedelta = DEFAULT_WAITING_PERIOD
    recheck_every: timedelta = DEFAULT_RECHECK_EVERY


@workflow.defn(versioning_behavior=LONG_WAIT)
class DeleteCID:
    @workflow.run
    async def run(self, input: DeleteCIDInput) -> CIDResult:
        change = input.change
        expect(change, EventType.DELETED)
        if change.deletion_type is not DeletionType.WAITING_PERIOD:
            return await apply(change)
        # The starter marked the run `CidPhase="waiting period"` at its start; it says how it ended here.
        deadline = workflow.now() + input.waiting_period
        while (remaining := deadline - workflow.now()) > timedelta(0):
            workflow.set_current_details(f"waiting period: the delete applies at {deadline.isoformat()}")
            summary = f"DICT's waiting period: the delete applies at {deadline.isoformat()}"
            await workflow.sleep(min(remaining, input.recheck_every), summary=summary)
            if await self._superseded(change):
                workflow.set_current_details("superseded by a newer event for the key: nothing to delete")
                return self._ended(CIDResult(outcome="superseded"))
        return self._ended(await apply(change))

    @staticmethod
    def _ended(result: CIDResult) -> CIDResult:
        if workflow.patched(PHASE_SEARCH_ATTRIBUTE):  # runs started before this replay without it
            workflow.upsert_search_attributes([PHASE.value_set(result.outcome)])
        return result

    @staticmethod
    async def _superseded(change: CIDChange) -> bool:
        query = KeySequenceQuery(participant=change.participant, key_type=change.key_type, key_id=change.key_id)
        latest = await workflow.execute_activity_method(
            StoreActivities.key_sequence,
            query,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary="has a newer event for the key been applied?",
        )
        return latest is not None and latest > change.sequence
