"""The no-op workflow of the per-event ceiling, in a module of its own so the worker's sandbox can import it."""

from temporalio import workflow

NOOP_TASK_QUEUE = "bench-noop"


@workflow.defn
class NoOp:
    @workflow.run
    async def run(self, value: int) -> int:
        return value
