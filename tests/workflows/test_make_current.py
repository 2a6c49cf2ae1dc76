"""`make_current`, the step a worker takes at start to route its deployment to its version, against the
session's Temporal dev server: an old version's worker restarting during a blue-green deploy must never
switch the deployment back.

Chaos seed 111989: a worker of the old build restarted, saw its version current, and waited for its task
queue to register; meanwhile the new build was made current; then the old worker's set landed and made
the old build current again, for good (the deploy waited 120 s for its version and failed).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.helpers.workers import versioned
from tests.workflows.test_cid_workflows import FakeStore
from workers import deployment
from workers.deployment import current_build_id, make_current
from workflows.create_cid import CreateCID


@asynccontextmanager
async def polling(client: Client, name: str, queue: str, *builds: str) -> AsyncIterator[None]:
    """Workers of each build of deployment `name` polling `queue`."""
    async with AsyncExitStack() as stack:
        for build in builds:
            version = WorkerDeploymentVersion(deployment_name=name, build_id=build)
            worker = Worker(
                client,
                deployment_config=versioned(version),
                task_queue=queue,
                workflows=[CreateCID],
                activities=FakeStore().activities(),
            )
            await stack.enter_async_context(worker)
        yield


async def test_an_old_workers_set_decided_before_a_switch_does_not_undo_it(
    temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, name, queue = temporal_env.client, f"switch-{uuid.uuid4().hex[:10]}", f"q-{uuid.uuid4()}"
    old, new = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("old", "new"))
    async with polling(client, name, queue, "old", "new"):
        assert await make_current(client, old, task_queues=[queue])
        seen_before_the_switch = await deployment._current(client, name)
        assert seen_before_the_switch[0] == "old"
        assert await make_current(client, new, task_queues=[queue])  # the deploy's switch

        # The restarting old worker decides on what it saw before the switch; its set must be refused.
        real = deployment._current
        views = [seen_before_the_switch]

        async def stale_then_real(client: Client, deployment_name: str) -> tuple[str | None, bytes]:
            return views.pop() if views else await real(client, deployment_name)

        monkeypatch.setattr(deployment, "_current", stale_then_real)
        assert not await make_current(client, old, task_queues=[queue], unless_another_is_current=True)
        assert not views  # it did decide on the stale view, and was refused
        assert await current_build_id(client, name) == "new"


async def test_a_worker_routes_a_deployment_with_no_current_version_and_leaves_another_current_one(
    temporal_env: WorkflowEnvironment,
) -> None:
    client, name, queue = temporal_env.client, f"first-{uuid.uuid4().hex[:10]}", f"q-{uuid.uuid4()}"
    first, second = (WorkerDeploymentVersion(deployment_name=name, build_id=b) for b in ("1", "2"))
    async with polling(client, name, queue, "1", "2"):
        assert await make_current(client, first, task_queues=[queue], unless_another_is_current=True)
        assert await make_current(client, first, task_queues=[queue], unless_another_is_current=True)  # again
        assert not await make_current(client, second, task_queues=[queue], unless_another_is_current=True)
        assert await current_build_id(client, name) == "1"


async def test_a_request_that_failed_in_passing_is_asked_again(
    temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A loaded server answered "Timeout expired" (DEADLINE_EXCEEDED), and the new version's worker exited
    # instead of asking again (make test's reduced chaos run, seed 637267: the upgrade never happened).
    client, name, queue = temporal_env.client, f"slow-{uuid.uuid4().hex[:10]}", f"q-{uuid.uuid4()}"
    version = WorkerDeploymentVersion(deployment_name=name, build_id="1")
    real = deployment._registered_task_queues
    # And a connection that broke under the call, and an operation the server cancelled itself.
    failures = [RPCError("operation was canceled", RPCStatusCode.CANCELLED, b"")]
    failures += [RPCError("h2 protocol error: http2 error", RPCStatusCode.INTERNAL, b"")]
    failures += [RPCError("Timeout expired", RPCStatusCode.DEADLINE_EXCEEDED, b"")] * 3

    async def slow_then_real(client: Client, version: WorkerDeploymentVersion) -> set[str]:
        if failures:
            raise failures.pop()
        return await real(client, version)

    monkeypatch.setattr(deployment, "_registered_task_queues", slow_then_real)
    caplog.set_level("INFO", logger=deployment.__name__)
    async with polling(client, name, queue, "1"):
        assert await make_current(client, version, task_queues=[queue], unless_another_is_current=True)
    assert not failures
    # What a slow deploy waits for is said, once per reason (the log of a loaded chaos run said nothing).
    waits = [r.getMessage() for r in caplog.records if "not current yet" in r.getMessage()]
    assert waits == [
        f"{name}/1 not current yet: {reason}"
        for reason in ("Timeout expired", "h2 protocol error: http2 error", "operation was canceled")
    ]
    assert await current_build_id(client, name) == "1"
