"""The worker's settings, apart from the worker itself so the CLI can read their defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class WorkerOptions:
    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    graceful_shutdown: timedelta = timedelta(seconds=30)
