"""The worker's settings, apart from the worker itself so the CLI can read their defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class WorkerOptions:
    max_concurrent_activities: int = 100
    # A workflow task of ApplyCIDBatch holds its batch (up to 500 changes, about 1 MB decoded) while its
    # local activity applies it, and one process runs one task at a time anyway (the GIL). 100 slots let a
    # backlog put up to 100 batches in memory at once: peaks of 165-225 MB in `make bench`. 20 keep the
    # peak at 169-186 MB with the same events/s, and per-event runs (a slot each while its apply runs)
    # still reach the no-op ceiling's pace (bench/RESULTS.md, "worker memory").
    max_concurrent_workflow_tasks: int = 20
    graceful_shutdown: timedelta = timedelta(seconds=30)
    # Make this worker's deployment version the current one once it polls, even when another is current
    # (`workers.deployment`); without it a worker does so only for a deployment with no current version.
    make_current: bool = False
