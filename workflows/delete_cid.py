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

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import KeySequenceQuery, StoreActivities
    from cidsync.events import DeletionType, EventType
    from cidsync.store.models import CIDChange
    from workflows.cid_change import CIDResult, apply, expect
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT

DEFAULT_WAITING_PERIOD = timedelta(days=30)
DEFAULT_RECHECK_EVERY = timedelta(days=1)


class DeleteCIDInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    change: CIDChange
    waiting_period: timedelta = DEFAULT_WAITING_PERIOD
    recheck_every: timedelta = DEFAULT_RECHECK_EVERY


@workflow.defn
class DeleteCID:
    @workflow.run
    async def run(self, input: DeleteCIDInput) -> CIDResult:
        change = input.change
        expect(change, EventType.DELETED)
        if change.deletion_type is DeletionType.WAITING_PERIOD:
            deadline = workflow.now() + input.waiting_period
            while (remaining := deadline - workflow.now()) > timedelta(0):
                workflow.set_current_details(f"waiting period: the delete applies at {deadline.isoformat()}")
                await workflow.sleep(min(remaining, input.recheck_every))
                if await self._superseded(change):
                    workflow.set_current_details("superseded by a newer event for the key: nothing to delete")
                    return CIDResult(outcome="superseded")
        return await apply(change)

    @staticmethod
    async def _superseded(change: CIDChange) -> bool:
        query = KeySequenceQuery(participant=change.participant, key_type=change.key_type, key_id=change.key_id)
        latest = await workflow.execute_activity_method(
            StoreActivities.key_sequence, query, start_to_close_timeout=STORE_TIMEOUT, retry_policy=STORE_RETRY
        )
        return latest is not None and latest > change.sequence
