"""The replay gate: runs in flight when a new worker version rolls out replay unchanged on the new code.

`histories/<release>/` holds, for each release, one history of every path the test suite drove each
workflow along (`make record-histories`, `tests/helpers/histories.py`); `histories/before-0.1.0/` the
three recorded by hand before that (`histories/record.py`). Every one of them replays here on the current
code: a change that adds, removes or reorders commands on a path an older release took must be gated with
`workflow.patched` (README, "Changing a workflow"), or this fails with a non-determinism error.
"""

from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.helpers.histories import HISTORIES, PRODUCT_WORKFLOWS, load, product_type_names, recorded

RECORDED = recorded()


def test_every_product_workflow_type_has_recorded_histories() -> None:
    """Not vacuous: the gate covers every workflow type the worker runs."""
    kinds = {load(path).events[0].workflow_execution_started_event_attributes.workflow_type.name for path in RECORDED}
    assert kinds == product_type_names()


@pytest.mark.parametrize("path", RECORDED, ids=[str(p.relative_to(HISTORIES)) for p in RECORDED])
async def test_a_run_recorded_by_an_earlier_release_replays_on_this_code(path: Path) -> None:
    replayer = Replayer(workflows=PRODUCT_WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
