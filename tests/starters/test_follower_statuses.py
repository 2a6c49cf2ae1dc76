"""`cidsync follow status` when workers are gone, which is when an operator runs it: a follower no worker
answers for costs the listing its query timeout, not the 30 s Temporal holds an unanswered query, and the
followers that do answer are still shown."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from starters.followers import follower_statuses
from tests.helpers.eventually import eventually
from tests.helpers.workers import current_worker
from tests.workflows.test_follow_cid_events import World, follower
from workflows.follow_cid_events import FollowCIDEvents, FollowStatus


def polled(handle: WorkflowHandle[FollowCIDEvents, None]) -> Callable[[], Awaitable[FollowStatus]]:
    async def status() -> FollowStatus:
        return await handle.query(FollowCIDEvents.status)

    return status


async def test_followers_without_a_worker_are_reported_without_holding_the_listing(
    temporal_env: WorkflowEnvironment,
) -> None:
    client = temporal_env.client
    world = World(t0=datetime.now(UTC) - timedelta(seconds=5), horizon=timedelta(days=1))
    argument = follower(poll_interval=timedelta(seconds=30), idle_interval=timedelta(seconds=60))
    orphans = [f"follow-orphan-{uuid.uuid4()}" for _ in range(3)]
    gone_queue, live_queue = f"follow-{uuid.uuid4()}", f"follow-{uuid.uuid4()}"
    async with current_worker(
        client, task_queue=gone_queue, workflows=[FollowCIDEvents], activities=world.activities()
    ):
        for workflow_id in orphans:
            handle = await client.start_workflow(FollowCIDEvents.run, argument, id=workflow_id, task_queue=gone_queue)
            await eventually(polled(handle), lambda status: status.polls >= 1, "a poll")
    # Their worker is gone now; one follower keeps a worker.
    live = f"follow-live-{uuid.uuid4()}"
    try:
        async with current_worker(
            client, task_queue=live_queue, workflows=[FollowCIDEvents], activities=world.activities()
        ):
            await client.start_workflow(FollowCIDEvents.run, argument, id=live, task_queue=live_queue)
            ours = {live, *orphans}

            async def listed() -> dict[str, FollowStatus | str]:
                return {wid: status for wid, status in await follower_statuses(client) if wid in ours}

            await eventually(listed, lambda found: set(found) == ours, "every follower visible")
            began = time.monotonic()
            found = dict(await follower_statuses(client, query_timeout=timedelta(seconds=1)))
            took = time.monotonic() - began
    finally:
        for workflow_id in [live, *orphans]:
            await client.get_workflow_handle(workflow_id).terminate("test over")

    assert isinstance(found[live], FollowStatus)
    for workflow_id in orphans:
        assert found[workflow_id] == "no answer in 1 s: is a worker polling its task queue?"
    # Asked one after the other, with Temporal's own hold, three orphans took about 90 s.
    assert took < 20, f"the listing took {took:.1f} s"
