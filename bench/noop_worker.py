"""`python -m bench.noop_worker ADDRESS`: a worker for the no-op ceiling, with the cidsync worker's settings
(and its sandbox), in a process of its own as the cidsync worker is."""

import asyncio
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from bench.noop_workflow import NOOP_TASK_QUEUE, NoOp
from workers.options import WorkerOptions


async def serve(temporal_address: str) -> None:
    options = WorkerOptions()
    client = await Client.connect(temporal_address)
    async with Worker(
        client,
        task_queue=NOOP_TASK_QUEUE,
        workflows=[NoOp],
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
    ):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
