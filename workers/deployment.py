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

# Asked again while Temporal has not yet registered the version (its workers' first polls).
NOT_YET = (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)


async def make_current(
    client: Client,
    version: WorkerDeploymentVersion,
    *,
    task_queues: Collection[str] = (),
    wait: timedelta = timedelta(seconds=60),
    identity: str = "",
) -> None:
    """Make `version` its deployment's current version, once Temporal has seen its workers poll, on each
    of `task_queues` if given. Waiting for every task queue is cautious: in one run here (dev server 1.32)
    a queue polled only after the switch seemed not to be served, a cause not isolated."""
    deadline = asyncio.get_running_loop().time() + wait.total_seconds()
    pause = 0.1
    while True:
        try:
            missing = set(task_queues) - await _registered_task_queues(client, version)
            if missing:
                raise RPCError(f"task queues not polled yet: {sorted(missing)}", RPCStatusCode.NOT_FOUND, b"")
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace,
                    deployment_name=version.deployment_name,
                    build_id=version.build_id,
                    identity=identity,
                )
            )
        except RPCError as error:
            if error.status not in NOT_YET or asyncio.get_running_loop().time() > deadline:
                raise CommandFailed(
                    f"could not make {version.deployment_name}/{version.build_id} the current version: {error.message}"
                ) from error
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        logger.info("%s/%s is the current version", version.deployment_name, version.build_id)
        return


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
    try:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment_name)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = described.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None
