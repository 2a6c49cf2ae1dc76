"""The starter's settings, apart from the starter itself so the CLI can read their defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from cidsync.errors import InvalidInput, Problem


class Mode(StrEnum):
    PER_EVENT = "per-event"
    BATCH = "batch"


@dataclass(frozen=True)
class StarterConfig:
    task_queue: str = "cidsync"
    subscription: str = "cidsync-starter"
    key_shared: bool = True  # Key_Shared keeps each entry on one consumer; Shared spreads more evenly
    max_in_flight: int = 200  # per-event starts under way at once
    max_redeliveries: int = 10
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(seconds=60)
    # The consumer redelivers a nacked message this long after the nack, which the settler sends once the
    # backoff has passed: a redelivery comes backoff + nack_delay after the failure. Pulsar's default, kept
    # on purpose: with 100 ms, pulsar-lite stopped redelivering batched messages nacked twice in quick
    # succession (a Redis primary killed mid-run: 876 nacks, the third round never came back). Shorter only
    # where an outage should be over sooner than a minute (the e2e tests: 5 s; the reduced chaos run: 10 s).
    nack_delay: timedelta = timedelta(seconds=60)
    # A refusal by Temporal (a missing namespace, an unknown search attribute) halts the starter only once
    # every start has been refused this long: a Temporal that has just restarted answers "namespace not
    # found" for a few seconds (seen on the dev server, under load for over 10 s).
    halt_after: timedelta = timedelta(seconds=60)
    waiting_period: timedelta = timedelta(days=30)
    mode: Mode = Mode.PER_EVENT
    batch_max_events: int = 500
    batch_max_wait: timedelta = timedelta(milliseconds=200)
    batches_in_flight: int = 4  # batch starts under way at once; more only queue at the server
    # Each receive hands over what has arrived, up to this many, waiting at most `receive_wait` for more:
    # the added latency when traffic is low, and how quickly a stop is noticed.
    receive_max_messages: int = 500
    receive_wait: timedelta = timedelta(milliseconds=10)
    log_stats_every: timedelta = timedelta(seconds=60)  # the counters in the log, for those without a scraper

    def __post_init__(self) -> None:
        """Refuse settings that would stall the starter (a semaphore of 0 never lets a start through)."""
        problems = [
            Problem(f"--{name.replace('_', '-')}", "must be at least 1")
            for name in ("max_in_flight", "batch_max_events", "batches_in_flight", "receive_max_messages")
            if getattr(self, name) < 1
        ]
        if self.max_redeliveries < 0:
            problems.append(Problem("--max-redeliveries", "must be 0 or more"))
        if self.batch_max_wait <= timedelta(0) or self.receive_wait <= timedelta(0):
            problems.append(Problem("--batch-max-wait-ms/--receive-wait-ms", "must be more than 0"))
        if self.nack_delay <= timedelta(0):
            problems.append(Problem("--nack-delay-s", "must be more than 0"))
        if self.halt_after < timedelta(0):
            problems.append(Problem("--halt-after-s", "must be 0 or more"))
        if self.log_stats_every <= timedelta(0):
            problems.append(Problem("--log-stats-every-s", "must be more than 0"))
        if problems:
            raise InvalidInput("starter settings", problems)
