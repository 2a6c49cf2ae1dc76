"""Making a worker's deployment version the current one: what a deploy does once the new workers poll.

A versioned worker gets no task until its version is its deployment's current (or ramping) version
(Temporal's Worker Versioning). A platform team's deploy step runs `temporal worker deployment
set-current-version` (README, "Upgrading cidsync"); `cidsync worker --make-current` does the same from the
worker itself once it polls, for a blue-green deploy that wants no separate step; without it a worker
makes its version current only for a deployment that has none yet, or has this one (a first install, the
embedded stack, another task queue of the same build). Temporal refuses a version whose workers it has
not seen poll yet, so this asks again until it is accepted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import timedelta

from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionMessage
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode

from cidsync.errors import CommandFailed

logger = logging.getLogger(__name__)

# Asked again, each try reading the state afresh:
# - NOT_FOUND: Temporal has not yet registered the version (its workers' first polls);
# - FAILED_PRECONDITION, ABORTED: a set refused for now (its conflict token made stale by another set, or
#   the current version's task queues not all polled by this one yet);
# - RESOURCE_EXHAUSTED: "too many requests issued to Worker Deployment" (several workers starting at once);
# - DEADLINE_EXCEEDED: "Timeout expired" from a loaded server (make test's reduced chaos run);
# - INTERNAL: "h2 protocol error", the connection broke under the call (a fault test's restarted worker
#   exited on it, and every later test on its stack failed);
# - CANCELLED: "operation was canceled", the server cancelled its own operation while the version's internal
#   workflow was closing (the worker's own shutdown cancels this task, never through an RPC status);
# - UNAVAILABLE: the server restarting.
AGAIN = (
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.INTERNAL,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.NOT_FOUND,
    RPCStatusCode.FAILED_PRECONDITION,
    RPCStatusCode.ABORTED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNAVAILABLE,
)


async def make_current(
    client: Client,
    version: WorkerDeploymentVersion,
    *,
    task_queues: Collection[str] = (),
    wait: timedelta = timedelta(seconds=60),
    identity: str = "",
    unless_another_is_current: bool = False,
) -> bool:
    """Make `version` its deployment's current version, once Temporal has seen its workers poll, on each
    of `task_queues` if given; True once it is. Waiting for every task queue is cautious: in one run here (dev
    server 1.32) a queue polled only after the switch seemed not to be served, a cause not isolated.

    `unless_another_is_current`: only while the deployment has no current version or has this one, and
    never over a switch made meanwhile (False then). The set carries the conflict token of the description
    it was decided on, so an old version's worker restarting during a blue-green deploy, which saw itself
    current a moment before, cannot switch the deployment back (chaos seed 111989 saw exactly that)."""
    deadline = asyncio.get_running_loop().time() + wait.total_seconds()
    pause = 0.1
    said = ""
    while True:
        try:
            current, token = await _current(client, version.deployment_name)
            if unless_another_is_current and current not in (None, version.build_id):
                logger.warning(
                    "%s/%s is not the current version (%s is): this worker gets tasks only of runs pinned to "
                    "it until `temporal worker deployment set-current-version` makes it current",
                    version.deployment_name,
                    version.build_id,
                    current,
                )
                return False
            missing = set(task_queues) - await _registered_task_queues(client, version)
            if missing:
                raise RPCError(f"task queues not polled yet: {sorted(missing)}", RPCStatusCode.NOT_FOUND, b"")
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace,
                    deployment_name=version.deployment_name,
                    build_id=version.build_id,
                    conflict_token=token if unless_another_is_current else b"",
                    identity=identity,
                )
            )
        except RPCError as error:
            if error.status not in AGAIN or asyncio.get_running_loop().time() > deadline:
                raise CommandFailed(
                    f"could not make {version.deployment_name}/{version.build_id} the current version: {error.message}"
                ) from error
            if error.message != said:  # once per reason: what a deploy that takes long is waiting for
                said = error.message
                logger.info("%s/%s not current yet: %s", version.deployment_name, version.build_id, said)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        logger.info("%s/%s is the current version", version.deployment_name, version.build_id)
        return True


async def _current(client: Client, deployment_name: str) -> tuple[str | None, bytes]:
    """The build id of the deployment's current version (None if none, or no such deployment yet) and the
    description's conflict token (empty for no deployment)."""
    try:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment_name)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None, b""
        raise
    current = described.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None, described.conflict_token


async def _registered_task_queues(client: Client, version: WorkerDeploymentVersion) -> set[str]:
    described = await client.workflow_service.describe_worker_deployment_version(
        DescribeWorkerDeploymentVersionRequest(
            namespace=client.namespace,
            deployment_version=VersionMessage(deployment_name=version.deployment_name, build_id=version.build_id),
        )
    )
    return {info.name for info in described.worker_deployment_version_info.task_queue_infos}


async def current_build_id(client: Client, deployment_name: str) -> str | None:
    """The build id of the deployment's current version; None if it has none (or no such deployment)."""
    return (await _current(client, deployment_name))[0]
