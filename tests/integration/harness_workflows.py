"""Workflows the harness tests run; in an importable module, as the sandbox requires (docs/stack.md)."""

from datetime import timedelta

from temporalio import workflow


@workflow.defn
class SleepThenAnswer:
    """Sleeps durably, so time skipping has something to skip."""

    @workflow.run
    async def run(self, days: int) -> str:
        await workflow.sleep(timedelta(days=days))
        return f"slept {days} days"
