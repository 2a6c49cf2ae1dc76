"""The cidsync worker: registers the workflows and activities and owns their clients' lifecycle.

Shutdown order (STACK.md): stop polling and let in-flight activities finish within the graceful
timeout, then close Redis (the activities' client). The Temporal client needs no close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.cid_store import CIDStore
from cidsync.config import Settings
from cidsync.redis_client import redis_client
from workflows.apply_cid_batch import ApplyCIDBatch
from workflows.create_cid import CreateCID
from workflows.delete_cid import DeleteCID
from workflows.update_cid import UpdateCID

logger = logging.getLogger(__name__)

WORKFLOWS = [CreateCID, UpdateCID, DeleteCID, ApplyCIDBatch]


@dataclass(frozen=True)
class WorkerOptions:
    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    graceful_shutdown: timedelta = timedelta(seconds=30)


def activities_of(store: CIDStore) -> list[Callable[..., Any]]:
    return [store.apply_change, store.key_sequence, store.apply_batch]


def build_worker(client: Client, store: CIDStore, task_queue: str, options: WorkerOptions) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities_of(store),
        max_concurrent_activities=options.max_concurrent_activities,
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=options.graceful_shutdown,
    )


async def run_worker(client: Client, settings: Settings, options: WorkerOptions, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then shut down gracefully."""
    if settings.key_secret is None:
        logger.warning("CIDSYNC_KEY_SECRET is not set: keys are hashed with the development secret")
    redis = redis_client(settings.require("redis_url"))
    try:
        store = CIDStore(redis, settings.key_secret_bytes, settings.mark_ttl_seconds)
        worker = build_worker(client, store, settings.task_queue, options)
        async with worker:
            logger.info("worker polling task queue %s", settings.task_queue)
            await stop.wait()
            logger.info("shutting down: finishing in-flight activities (up to %s)", options.graceful_shutdown)
    finally:
        await redis.aclose()
