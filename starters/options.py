"""The starter's settings, apart from the starter itself so the CLI can read their defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Mode(StrEnum):
    PER_EVENT = "per-event"
    BATCH = "batch"


@dataclass(frozen=True)
class StarterConfig:
    task_queue: str = "cidsync"
    subscription: str = "cidsync-starter"
    key_shared: bool = True  # Key_Shared keeps each entry on one consumer; Shared spreads more evenly
    max_in_flight: int = 200
    max_redeliveries: int = 10
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(seconds=60)
    waiting_period: timedelta = timedelta(days=30)
    mode: Mode = Mode.PER_EVENT
    batch_max_events: int = 500
    batch_max_wait: timedelta = timedelta(milliseconds=200)
