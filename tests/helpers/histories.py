"""The replay gate's histories: every path the test suite drives cidsync's workflows along, kept per release.

`make record-histories` runs the whole suite with `--record-histories DIR`: when the session's Temporal
server is about to stop, every run of a product workflow it holds (finished or still running, children and
continued runs included) is sorted by its *path*, the sequence of what the workflow did (activities by
type, timers, child workflows, signals, markers such as `workflow.patched`, search-attribute upserts, how it
ended; a repeat of the same step counted once), and one history of each path is written to `DIR`, named
by its workflow type and a digest of its path. Six pytest workers record into one folder; a path two of
them took is written once.

A history is kept only if it replays on the code that recorded it: a run of a test double that borrows a
product workflow's name (a fake `ReconcileVSync` in a unit test) never becomes part of the gate.

`tests/workflows/test_replay.py` replays every history of every release folder on the current code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.cid_worker import INGESTION_WORKFLOWS, RECONCILIATION_WORKFLOWS

PRODUCT_WORKFLOWS = [*INGESTION_WORKFLOWS, *RECONCILIATION_WORKFLOWS]
HISTORIES = Path(__file__).resolve().parents[1] / "workflows" / "histories"

# The bookkeeping of every workflow task, the same on every path: left out of a path.
_NOISE = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
}


def product_type_names() -> set[str]:
    names = set()
    for workflow in PRODUCT_WORKFLOWS:
        definition = getattr(workflow, "__temporal_workflow_definition")
        names.add(str(definition.name))
    return names


def _step(event: HistoryEvent) -> str | None:
    if event.event_type in _NOISE:
        return None
    name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    if event.HasField("activity_task_scheduled_event_attributes"):
        return f"{name}:{event.activity_task_scheduled_event_attributes.activity_type.name}"
    if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
        return f"{name}:{event.start_child_workflow_execution_initiated_event_attributes.workflow_type.name}"
    if event.HasField("workflow_execution_signaled_event_attributes"):
        return f"{name}:{event.workflow_execution_signaled_event_attributes.signal_name}"
    if event.HasField("marker_recorded_event_attributes"):
        marker = event.marker_recorded_event_attributes
        patch = marker.details.get("patch-data")  # the SDK's patch marker: {"id": ..., "deprecated": ...}
        patch_id = json.loads(patch.payloads[0].data)["id"] if patch and patch.payloads else ""
        return f"{name}:{marker.marker_name}:{patch_id}"
    return name


def path_of(events: Iterable[HistoryEvent]) -> list[str]:
    """What the run did, in order, each repeat of a step once (a batch of 3 or of 300 applies is one path)."""
    steps: list[str] = []
    for event in events:
        step = _step(event)
        if step is not None and (not steps or steps[-1] != step):
            steps.append(step)
    return steps


def history_name(workflow_type: str, events: Iterable[HistoryEvent]) -> str:
    digest = hashlib.sha256(json.dumps(path_of(events)).encode()).hexdigest()[:12]
    return f"{workflow_type}-{digest}.json"


async def record_histories(client: Client, target: Path) -> tuple[int, int]:
    """Write one history per path of every product workflow run `client`'s namespace holds; return the
    counts of histories written and of runs left out because they do not replay on this code."""
    present = await asyncio.to_thread(_present, target)
    wanted = product_type_names()
    replayer = Replayer(workflows=PRODUCT_WORKFLOWS, data_converter=pydantic_data_converter)
    found: dict[str, str] = {}
    refused = 0
    async for execution in client.list_workflows():
        if execution.workflow_type not in wanted:
            continue
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        name = history_name(execution.workflow_type, history.events)
        if name in present or name in found:
            continue
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            refused += 1
            continue
        found[name] = json.dumps(_without_stack_traces(json.loads(history.to_json())), separators=(",", ":")) + "\n"
    await asyncio.to_thread(_write, target, found)
    return len(found), refused


def _without_stack_traces(value: Any) -> Any:
    """A failure's stack trace names files of the recording machine and plays no part in a replay."""
    if isinstance(value, dict):
        return {key: _without_stack_traces(item) for key, item in value.items() if key != "stackTrace"}
    if isinstance(value, list):
        return [_without_stack_traces(item) for item in value]
    return value


def _present(target: Path) -> set[str]:
    target.mkdir(parents=True, exist_ok=True)
    return {path.name for path in target.glob("*.json")}


def _write(target: Path, found: dict[str, str]) -> None:
    for name, text in found.items():
        tmp = target / f"{name}.tmp"
        tmp.write_text(text)
        tmp.replace(target / name)  # another pytest worker may write the same path: whole files only


def recorded() -> list[Path]:
    """Every history of every release, oldest release first."""
    return sorted(HISTORIES.glob("*/*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())
