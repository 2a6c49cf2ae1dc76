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
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from cidsync.naming import AWAITING_APPROVAL

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


@dataclass(frozen=True)
class PairState:
    """What the worker last read of one pair: from the store's verification record (epoch seconds, None if
    never) and from Temporal's visibility (when its reconciliation awaiting approval started)."""

    last_ok: float | None = None  # the last formal VerifySync OK
    last_proof: float | None = None  # the last proof of any kind (formal OK or anchored to DICT's log)
    nok: bool = False  # the last formal VerifySync said NOK
    awaiting_approval_since: float | None = None


class _PairGauges:
    """The per-pair gauges, computed at scrape time from what the worker last read, so an age keeps growing
    between refreshes, as the alerts need. Every worker replica reads the same store and the same
    visibility, so every replica reports the same values (within a refresh): a rule may take any of them
    (`min`/`max by (participant, key_type)`), and none goes stale when another replica runs the workflows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], PairState] = {}
        self._first_seen = time.time()

    def update(self, pairs: Mapping[tuple[str, str], PairState]) -> None:
        """`pairs`: (participant, key type) -> its state; a pair left out is no longer reported."""
        with self._lock:
            self._pairs = dict(pairs)

    def _each(self) -> list[tuple[dict[str, str], PairState]]:
        with self._lock:
            return [({"participant": p, "key_type": k}, state) for (p, k), state in self._pairs.items()]

    def _age(self, at: float | None, now: float) -> float:
        # Never: the time since the worker first looked, so that it still crosses a threshold.
        return now - (at if at is not None else self._first_seen)

    def since_ok(self, _: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        return [Observation(self._age(state.last_ok, now), labels) for labels, state in self._each()]

    def since_proof(self, _: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        return [Observation(self._age(state.last_proof, now), labels) for labels, state in self._each()]

    def nok(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(state.nok), labels) for labels, state in self._each()]

    def awaiting_approval(self, _: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        # 0 while none waits: a series per pair from the start, as for the other gauges.
        return [
            Observation(now - state.awaiting_approval_since if state.awaiting_approval_since else 0.0, labels)
            for labels, state in self._each()
        ]


class _Phases:
    """`cidsync_reconciliations_running{phase}`: the running reconciliations by phase, as the worker last
    listed them (every replica lists the same ones)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._seen: set[str] = {AWAITING_APPROVAL}  # the one an alert may read: there from the start

    def update(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts = dict(counts)
            self._seen |= set(counts)

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:  # a phase seen once stays, at 0 when none is in it: a series does not vanish
            return [Observation(self._counts.get(phase, 0), {"phase": phase}) for phase in sorted(self._seen)]


reconciliation_phases = _Phases()
_meter.create_observable_gauge(
    "cidsync.reconciliations.running",
    callbacks=[reconciliation_phases.observe],
    description="reconciliations running now, by phase (CidPhase)",
)
pair_gauges = _PairGauges()
for _name, _callback, _unit, _description in (
    (
        "cidsync.verification.seconds_since_ok",
        pair_gauges.since_ok,
        "s",
        "seconds since each pair's last formal OK VerifySync (or since the worker started, if never)",
    ),
    (
        "cidsync.verification.seconds_since_proof",
        pair_gauges.since_proof,
        "s",
        "seconds since each pair's last proof of any kind: formal OK or anchored to DICT's log",
    ),
    ("cidsync.verification.nok", pair_gauges.nok, "", "1 while a pair's last formal VerifySync said NOK, else 0"),
    (
        "cidsync.reconciliation.awaiting_approval",
        pair_gauges.awaiting_approval,
        "s",
        "seconds since the start of the pair's reconciliation waiting for an operator's approval; 0: none",
    ),
):
    _meter.create_observable_gauge(_name, callbacks=[_callback], unit=_unit, description=_description)
