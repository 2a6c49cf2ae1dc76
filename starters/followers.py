"""Starting the event-log followers: one FollowCidEvents per (participant, key type), forever.

`cidsync schedule ensure`, `cidsync follow ensure` and `cidsync dev up` call `ensure_followers`. Each
follower's id is the pair's (`follow-<participant>-<key type>`) and the start uses USE_EXISTING, so
ensuring twice, or from two places at once, leaves one follower per pair. A running follower keeps the
settings it was started with (it carries them across continue-as-new); to change them, terminate it and
ensure again: its successor starts at that moment of DICT's log, and the daily reconciliation covers
the gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from cidsync.entry import PairRef
from cidsync.naming import follow_search_attributes, follow_summary, follow_workflow_id
from workflows.follow_cid_events import WORKFLOW_TYPE, FollowCIDEvents, FollowInput, FollowStatus

FOLLOWERS_QUERY = f'WorkflowType="{WORKFLOW_TYPE}" AND ExecutionStatus="Running"'


async def ensure_follower(client: Client, request: FollowInput, task_queue: str) -> tuple[str, str]:
    """(workflow id, "running" | "started") for the pair's follower."""
    workflow_id = follow_workflow_id(request.participant, request.key_type)
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
        if described.status is WorkflowExecutionStatus.RUNNING:
            return workflow_id, "running"
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
    await client.start_workflow(
        FollowCIDEvents.run,
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=follow_search_attributes(request.participant, request.key_type),
        static_summary=follow_summary(request.participant, request.key_type),
    )
    return workflow_id, "started"


async def ensure_followers(
    client: Client, pairs: Iterable[PairRef], task_queue: str, settings: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """A follower for every pair, with `settings` (FollowInput fields; the defaults for the rest); by
    workflow id, what was done."""
    done = {}
    for pair in pairs:
        request = FollowInput(participant=pair.participant, key_type=pair.key_type, **(settings or {}))
        workflow_id, what = await ensure_follower(client, request, task_queue)
        done[workflow_id] = what
    return done


# How long one follower may take to answer its status query. A follower answers from memory in
# milliseconds when a worker polls its task queue; with none polling, Temporal holds the query about 30 s
# before it gives up, and `cidsync follow status` is run exactly when something is wrong.
STATUS_QUERY_TIMEOUT = timedelta(seconds=5)


async def follower_statuses(
    client: Client, query_timeout: timedelta = STATUS_QUERY_TIMEOUT
) -> list[tuple[str, FollowStatus | str]]:
    """Every running follower's status (or why it could not be read), sorted by workflow id.

    The followers are asked all at once, each for at most `query_timeout`: one follower without a worker
    costs the listing that long, not 30 s a follower.
    """

    async def status(workflow_id: str) -> tuple[str, FollowStatus | str]:
        handle: WorkflowHandle[FollowCIDEvents, None] = client.get_workflow_handle_for(FollowCIDEvents.run, workflow_id)
        try:
            return workflow_id, await handle.query(FollowCIDEvents.status, rpc_timeout=query_timeout)
        except RPCError as error:
            if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                return workflow_id, (
                    f"no answer in {query_timeout.total_seconds():.0f} s: is a worker polling its task queue?"
                )
            return workflow_id, f"no answer: {error}"
        except WorkflowQueryFailedError as error:
            return workflow_id, f"no answer: {error}"

    ids = [execution.id async for execution in client.list_workflows(FOLLOWERS_QUERY)]
    found = await asyncio.gather(*(status(workflow_id) for workflow_id in ids))
    return sorted(found, key=lambda item: item[0])


def age(moment: datetime | None, now: datetime) -> str:
    """`12 s ago`, `3 min ago`, `never`: how old a moment is, for a terminal."""
    if moment is None:
        return "never"
    seconds = max((now - moment).total_seconds(), 0.0)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"
