"""What the three per-event workflows share: how an event's change is applied, and what a run returns.

The input is the starter's minimal change (`cidsync.change.CIDChange`): ids, the key id, the CID and
the sequence. No entry, PIX key or name ever enters these workflows (docs/design.md §3, §5).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import StoreActivities
    from cidsync.change import CIDChange
    from cidsync.events import EventType
    from cidsync.store.models import ApplyResult
    from workflows.policies import INVALID_INPUT, STORE_RETRY, STORE_TIMEOUT


class CIDResult(BaseModel):
    """What a run did: `applied`; `duplicate` (its change was already the key's state: an earlier attempt
    of the run wrote it, or a duplicate of the event did); `stale` (a newer event had already won); or
    `superseded` (a delete's waiting period ended after a newer event)."""

    model_config = ConfigDict(frozen=True)

    outcome: str
    vsync: str | None = None


def expect(change: CIDChange, *types: EventType) -> None:
    if change.event_type not in types:
        raise ApplicationError(
            f"{change.event_type.value} event {change.event_id} sent to the wrong workflow",
            type=INVALID_INPUT,
            non_retryable=True,
        )


async def apply(change: CIDChange) -> CIDResult:
    # A local activity: it runs in this worker straight after the workflow task, so a run is one workflow
    # task at the server, as a no-op workflow is; a regular activity added a task and its events, and the
    # server is what bounds per-event mode (docs/development.md). The apply is one atomic, idempotent script, so the
    # at-least-once of a local activity (run again if the worker dies before the task completes) is safe.
    result: ApplyResult = await workflow.execute_local_activity_method(
        StoreActivities.apply_change,
        change,
        start_to_close_timeout=STORE_TIMEOUT,
        retry_policy=STORE_RETRY,
        summary="apply to the CID store",
    )
    workflow.set_current_details(f"{result.status.value}; VSync of the pair now {result.vsync}")
    return CIDResult(outcome=result.status.value, vsync=result.vsync)
