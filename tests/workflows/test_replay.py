"""Runs in flight when a new worker version rolls out replay unchanged on the new code.

The histories in `histories/` were recorded with the code before a change to these workflows
(`histories/record.py` says how): a change that adds or removes commands must be gated with
`workflow.patched`, or this fails with a non-determinism error.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.delete_cid import DeleteCID
from workflows.follow_cid_events import FollowCIDEvents
from workflows.reconcile_vsync import ReconcileVSync

HISTORIES = Path(__file__).parent / "histories"


@pytest.mark.parametrize("name", ["reconcile_ok", "delete_waiting_period", "follow_repair"])
async def test_a_run_recorded_by_the_previous_code_replays_on_this_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    replayer = Replayer(workflows=[ReconcileVSync, DeleteCID, FollowCIDEvents], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
