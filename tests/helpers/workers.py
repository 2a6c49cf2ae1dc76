"""Versioned workers for the tests: every cidsync worker is one (`workflows/versioning.py`: Temporal
refuses a workflow that declares a versioning behaviour from an unversioned worker).

The tests' workers share one deployment version (`TEST_VERSION`); each test's task queue joins it when
its worker first polls, and the version is made current again then, as a worker of the product does for
another task queue of its build (`workers.cid_worker.run_worker`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig

from workers.deployment import make_current

TEST_VERSION = WorkerDeploymentVersion(deployment_name="cidsync-tests", build_id="test")


def versioned(version: WorkerDeploymentVersion = TEST_VERSION) -> WorkerDeploymentConfig:
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True)


@asynccontextmanager
async def current_worker(
    client: Client, *, version: WorkerDeploymentVersion = TEST_VERSION, **options: Any
) -> AsyncIterator[Worker]:
    """A running `Worker(client, **options)` of `version`, made current once it polls."""
    async with made_current(client, Worker(client, deployment_config=versioned(version), **options), version) as worker:
        yield worker


@asynccontextmanager
async def made_current(client: Client, worker: Worker, version: WorkerDeploymentVersion) -> AsyncIterator[Worker]:
    """Run an already built `worker` of `version`, made current once it polls."""
    async with worker:
        await make_current(client, version)
        yield worker
