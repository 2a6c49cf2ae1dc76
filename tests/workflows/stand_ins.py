"""The workflows the workflow tests register beside the product's, in a module of their own whose imports
pass through the sandbox, as the product's workflow modules' do.

The sandbox imports a workflow's module afresh for every run, and once more when a worker is built.
Defined in a test module, each run imported that test module again with all it imports (the activities,
redis-py, OpenTelemetry's SDK): py-spy found half of `tests/workflows`' CPU there.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.versioning import LONG_WAIT

with workflow.unsafe.imports_passed_through():
    from workflows.cid_change import CIDResult
    from workflows.delete_cid import DeleteCID, DeleteCIDInput
    from workflows.reconcile_vsync import ReconcileInput

B_CHANGE = "test-upgrade-b"


@workflow.defn(name="ReconcileVSync", versioning_behavior=LONG_WAIT)
class FakeReconcile:
    """Stands in for the reconciliation a follower's hand-over starts: records its input through a query."""

    @workflow.run
    async def run(self, request: ReconcileInput) -> None:
        self.request = request

    @workflow.query
    def input(self) -> ReconcileInput:
        return self.request


@workflow.defn(name="DeleteCID", versioning_behavior=LONG_WAIT)
class ChangedDeleteCID(DeleteCID):
    """Version B's DeleteCID in the upgrade test: one more step at the end, gated as README's "Changing a
    workflow" says."""

    @workflow.run
    async def run(self, input: DeleteCIDInput) -> CIDResult:
        result = await super().run(input)
        if workflow.patched(B_CHANGE):
            await workflow.sleep(timedelta(milliseconds=10))
        return result
