"""The starter's calls to Temporal: one run per event, or one per batch, under a deterministic id.

`USE_EXISTING` + `REJECT_DUPLICATE`: a start for an id Temporal already has, running or finished, is
"already started", which is all the starter needs (the event is Temporal's). Other refusals propagate to
the settler, which tells the transient ones from those that halt the starter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from cidsync.change import CIDBatch, CIDChange
from cidsync.events import EventType
from cidsync.naming import (
    batch_search_attributes,
    batch_workflow_id,
    event_search_attributes,
    event_summary,
    event_workflow_id,
)
from cidsync.telemetry import instruments
from starters.options import StarterConfig
from starters.settling import StarterStats
from workflows.apply_cid_batch import ApplyCIDBatch
from workflows.create_cid import CreateCID
from workflows.delete_cid import DeleteCID, DeleteCIDInput
from workflows.update_cid import UpdateCID

# The metrics' labels: fixed sets, never the free text of a reason.
PER_EVENT = {"mode": "per_event"}
BATCH = {"mode": "batch"}


class Starts(Protocol):
    """What the dispatchers ask of Temporal."""

    async def start_event(self, change: CIDChange) -> None: ...
    async def start_batch(self, changes: Sequence[CIDChange]) -> None: ...


class WorkflowStarts:
    """`Starts` on a Temporal client."""

    def __init__(self, temporal: Client, config: StarterConfig, stats: StarterStats) -> None:
        self.temporal = temporal
        self.config = config
        self.stats = stats

    async def start_event(self, change: CIDChange) -> None:
        workflow: Callable[..., Any]
        argument: Any
        if change.event_type is EventType.CREATED:
            workflow, argument = CreateCID.run, change
        elif change.event_type is EventType.UPDATED:
            workflow, argument = UpdateCID.run, change
        else:
            workflow, argument = DeleteCID.run, DeleteCIDInput(change=change, waiting_period=self.config.waiting_period)
        started = time.perf_counter()
        try:
            await self.temporal.start_workflow(
                workflow,
                argument,
                id=event_workflow_id(change),
                task_queue=self.config.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=event_search_attributes(change),
                static_summary=event_summary(change),
            )
            self.stats.started += 1
            _count(PER_EVENT, "started", started)
        except WorkflowAlreadyStartedError:
            # Started before (it may even have finished): Temporal has it, which is all we need.
            self.stats.already_started += 1
            _count(PER_EVENT, "already_started", started)

    async def start_batch(self, changes: Sequence[CIDChange]) -> None:
        instruments.batch_size.record(len(changes))
        started = time.perf_counter()
        try:
            await self.temporal.start_workflow(
                ApplyCIDBatch.run,
                CIDBatch(changes=list(changes)),
                id=batch_workflow_id(changes),
                task_queue=self.config.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=batch_search_attributes(changes),
                static_summary=f"batch of {len(changes)} entry events",
            )
            self.stats.batches += 1
            _count(BATCH, "started", started)
        except WorkflowAlreadyStartedError:
            self.stats.already_started += 1
            _count(BATCH, "already_started", started)


def _count(mode: dict[str, str], result: str, started: float) -> None:
    instruments.workflow_starts.add(1, {**mode, "result": result})
    instruments.start_duration.record(time.perf_counter() - started, mode)
