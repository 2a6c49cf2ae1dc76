"""Our metrics, on OpenTelemetry's global meter provider (a no-op until a role serves an endpoint).

Labels are bounded and never personal: topics, modes, outcomes, reasons from a fixed set, participants
(ISPBs) and key types. Counting happens per received batch where it can, so the hot path pays one call
per batch rather than one per event.

Workflows record theirs through `workflow.metric_meter()` instead (replay-safe, and exported on the same
endpoint through Temporal's metric buffer): reconciliation outcomes and repairs, stale verifications.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

_meter = metrics.get_meter("cidsync")

# --- the starter -------------------------------------------------------------------------------------
events_consumed = _meter.create_counter(
    "cidsync.starter.events.consumed", unit="{event}", description="messages received from an entry topic"
)
events_dead_lettered = _meter.create_counter(
    "cidsync.starter.events.dead_lettered",
    unit="{event}",
    description="messages sent to the dead-letter topic, by reason (invalid_event, redeliveries_exhausted)",
)
events_already_applied = _meter.create_counter(
    "cidsync.starter.events.already_applied",
    unit="{event}",
    description="messages whose idempotency mark said they were applied: acked without a start",
)
events_retried = _meter.create_counter(
    "cidsync.starter.events.retried", unit="{event}", description="messages nacked after a transient failure"
)
workflow_starts = _meter.create_counter(
    "cidsync.starter.workflow_starts",
    unit="{start}",
    description="workflow starts, by mode and result (started, already_started)",
)
start_duration = _meter.create_histogram(
    "cidsync.starter.start.duration",
    unit="s",
    description="time for Temporal to accept one start, by mode",
    explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
)
batch_size = _meter.create_histogram(
    "cidsync.starter.batch.size",
    unit="{event}",
    description="events per ApplyCIDBatch start",
    explicit_bucket_boundaries_advisory=[1, 10, 50, 100, 200, 500, 1000, 2000],
)

# --- the worker --------------------------------------------------------------------------------------
store_changes = _meter.create_counter(
    "cidsync.store.changes",
    unit="{change}",
    description="changes the store applied, by outcome (applied, stale)",
)


class _SinceLastOk:
    """`cidsync.verification.seconds_since_ok` per pair, from what the worker last read from the store.

    An observable gauge: the value is computed at scrape time from the last OK's timestamp, so it keeps
    growing between refreshes, as the alert needs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ok: dict[tuple[str, str], float | None] = {}
        self._first_seen = time.time()

    def update(self, last_ok: Mapping[tuple[str, str], float | None]) -> None:
        """`last_ok`: (participant, key type) -> epoch seconds of the last OK verification, None if never."""
        with self._lock:
            self._last_ok = dict(last_ok)

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        with self._lock:
            pairs = list(self._last_ok.items())
        # Never verified: reported as the time since the worker first looked, so it still crosses a threshold.
        return [
            Observation(now - (ok if ok is not None else self._first_seen), {"participant": p, "key_type": k})
            for (p, k), ok in pairs
        ]


seconds_since_ok = _SinceLastOk()
_meter.create_observable_gauge(
    "cidsync.verification.seconds_since_ok",
    callbacks=[seconds_since_ok.observe],
    unit="s",
    description="seconds since each pair's last OK VerifySync (or since the worker started, if never)",
)
