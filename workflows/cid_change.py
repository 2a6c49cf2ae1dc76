"""What the three per-event workflows share: the change an event makes, and how it is applied."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import ApplyResult, CIDChange, CIDStore
    from cidsync.cid import cid
    from cidsync.events import EntryEvent, EventType

# Redis may be down for a while: retry without limit (nothing may be lost), backing off to 30 s.
# Invalid data can never succeed, so it fails at once.
STORE_TIMEOUT = timedelta(seconds=10)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["InvalidInput", "ValidationError"],
)


class CIDEventInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    event: EntryEvent


class CIDResult(BaseModel):
    """What a run did: `applied`, `stale` (a newer event had already won) or `superseded`."""

    model_config = ConfigDict(frozen=True)

    outcome: str
    vsync: str | None = None


def change_for(event: EntryEvent) -> CIDChange:
    """The versioned change an event makes: its CID (pure domain code), or None for a delete."""
    entry = event.entry
    return CIDChange(
        participant=entry.participant,
        key_type=entry.key_type,
        key=entry.key,
        sequence=event.sequence,
        cid=None if event.event_type is EventType.DELETED else cid(entry),
        event_id=str(event.event_id),
        entry_id=str(entry.id),
    )


def expect(event: EntryEvent, *types: EventType) -> None:
    if event.event_type not in types:
        raise ApplicationError(
            f"{event.event_type.value} event {event.event_id} sent to the wrong workflow",
            type="InvalidInput",
            non_retryable=True,
        )


async def apply(event: EntryEvent) -> CIDResult:
    result: ApplyResult = await workflow.execute_activity_method(
        CIDStore.apply_change, change_for(event), start_to_close_timeout=STORE_TIMEOUT, retry_policy=STORE_RETRY
    )
    workflow.set_current_details(f"{result.status.value}; VSync of the pair now {result.vsync}")
    return CIDResult(outcome=result.status.value, vsync=result.vsync)
