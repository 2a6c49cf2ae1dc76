"""`cidsync schedule ensure`: the Temporal Schedules behind DICT's "verify at least every 36 hours".

- `cidsync-verify`: daily (03:00 America/Sao_Paulo by default) runs VerifyAllPairs, which starts or joins
  the ReconcileVSync of every configured (participant, key type). Overlap SKIP: a run still going is
  never doubled. The catch-up window makes a run missed while Temporal was down happen when it is back,
  if it is still within the window.
- `cidsync-freshness`: hourly runs CheckVerificationFreshness, which alerts on any pair whose last OK
  verification is older than 36 hours. It is separate so the alert still fires when the daily run
  itself is what is broken, and within an hour rather than a day.

Ensure is idempotent: it creates each schedule, or updates it in place to the current configuration
(pairs, time, zone), so re-running it after changing `CIDSYNC_PARTICIPANTS` is how the change lands.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from cidsync.entry import KeyType, PairRef
from workflows.check_freshness import MAX_AGE, CheckVerificationFreshness, FreshnessInput
from workflows.verify_all import VerifyAllInput, VerifyAllPairs

VERIFY_SCHEDULE_ID = "cidsync-verify"
FRESHNESS_SCHEDULE_ID = "cidsync-freshness"


@dataclass(frozen=True)
class ScheduleConfig:
    participants: tuple[str, ...]
    key_types: tuple[KeyType, ...] = tuple(KeyType)
    hour: int = 3
    minute: int = 0
    time_zone: str = "America/Sao_Paulo"
    catchup_window: timedelta = timedelta(hours=12)
    freshness_every: timedelta = timedelta(hours=1)
    max_age: timedelta = MAX_AGE
    divergence_threshold: int = 100
    pairs: list[PairRef] = field(init=False)

    def __post_init__(self) -> None:
        pairs = [PairRef(participant=p, key_type=t) for p in self.participants for t in self.key_types]
        object.__setattr__(self, "pairs", pairs)


def verify_schedule(config: ScheduleConfig, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            VerifyAllPairs.run,
            VerifyAllInput(pairs=config.pairs, divergence_threshold=config.divergence_threshold),
            id="cidsync-verify-all",
            task_queue=task_queue,
            static_summary=f"daily DICT verification of {len(config.pairs)} (participant, key type)",
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    hour=[ScheduleRange(config.hour)],
                    minute=[ScheduleRange(config.minute)],
                    comment="DICT: verify every VSync at least every 36 hours",
                )
            ],
            time_zone_name=config.time_zone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=config.catchup_window),
    )


def freshness_schedule(config: ScheduleConfig, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            CheckVerificationFreshness.run,
            FreshnessInput(pairs=config.pairs, max_age=config.max_age),
            id="cidsync-freshness-check",
            task_queue=task_queue,
            static_summary=f"alert when a last OK verification is older than {config.max_age}",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=config.freshness_every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=config.freshness_every),
    )


async def _ensure(client: Client, schedule_id: str, schedule: Schedule) -> str:
    try:
        await client.create_schedule(schedule_id, schedule)
        return "created"
    except ScheduleAlreadyRunningError:

        def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
            # Keep the schedule's state: an operator's pause (and its note) survives an ensure.
            return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=current.description.schedule.state))

        await client.get_schedule_handle(schedule_id).update(replace)
        return "updated"


async def ensure_schedules(client: Client, config: ScheduleConfig, task_queue: str) -> dict[str, str]:
    """Create or update both schedules; returns what was done to each, by schedule id."""
    return {
        VERIFY_SCHEDULE_ID: await _ensure(client, VERIFY_SCHEDULE_ID, verify_schedule(config, task_queue)),
        FRESHNESS_SCHEDULE_ID: await _ensure(client, FRESHNESS_SCHEDULE_ID, freshness_schedule(config, task_queue)),
    }
