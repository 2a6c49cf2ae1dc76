"""Timeouts, retry policies and failure types that every workflow shares, in one place.

Failure types are the names activities raise (`ApplicationError.type`), taken from where they are raised
so a rename cannot split the raiser from the workflow that matches on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    # Re-exported: the names are defined where they are raised.
    from activities.cid_file import CID_FILE_MISMATCH as CID_FILE_MISMATCH
    from activities.core_events import CoreEventsPublisher
    from activities.repair import DICT_INCONSISTENT as DICT_INCONSISTENT
    from cidsync.bridge import errors
    from cidsync.errors import InvalidInput
    from cidsync.store.layout import Scratch

INVALID_INPUT = InvalidInput.__name__
VALIDATION_ERROR = "ValidationError"  # pydantic's, raised when an activity's input or output is malformed
RATE_LIMITED = errors.RateLimited.__name__
INVALID_ARGUMENT = errors.InvalidArgument.__name__
PERMISSION_DENIED = errors.PermissionDenied.__name__
# `workflow.patched` ids: runs started before a change replay without its commands.
PHASE_SEARCH_ATTRIBUTE = "cid-phase-search-attribute"  # CidPhase upserted as a long run moves on
PROOF_WHILE_CHANGING = "proof-while-changing"  # the local VSync with in-flight CIDs from DICT's log, proved
FOLLOWER_PROOFS = "follower-proofs"  # a follower with suspects pending proves its pair all the same
FORMAL_PURSUIT = "formal-pursuit"  # a follower whose last proof came from the log still tries for a formal one
CATCH_UP = "follower-catch-up"  # a follower whose page came back full reads the next one sooner
FORMAL_AFTER_LOG = "formal-after-log"  # a reconciliation proved by DICT's log still tries for a formal OK
ANCHORED_DIFF = "anchored-diff"  # the CID file rolled forward with DICT's log, the diff judged after a grace
LANDING_PATIENCE = "landing-patience"  # a proof's in-flight CIDs looked at again, a grace apart, before withdrawal
CANCEL_DURING_ACTIVITY = "cancel-during-activity"  # a run cancelled while an activity ran ends Cancelled, not Failed
RECONCILIATION_FAILED = "ReconciliationFailed"  # how a FAILED reconciliation ends (the result in its details)

# Redis may be down for a while: retry without limit (nothing may be lost), backing off to 30 s.
# Invalid data can never succeed, so it fails at once.
STORE_TIMEOUT = timedelta(seconds=10)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=[INVALID_INPUT, VALIDATION_ERROR],
)

# DICT calls: transient failures retried with backoff for up to an hour, then the run gives up (FAILED)
# and the next scheduled run tries again. A rate limit's retry-after sets the next attempt's delay.
BRIDGE_CALL = timedelta(seconds=30)
BRIDGE_GIVE_UP = timedelta(hours=1)
BRIDGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=[INVALID_ARGUMENT, PERMISSION_DENIED],
)

# Notices to core (`core-events`): small, retried until the broker takes them. The outbox of a repair is
# retried without limit too: a repair core never hears of would leave its records wrong.
NOTICE_TIMEOUT = timedelta(seconds=30)
NOTICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
OUTBOX_TIMEOUT = timedelta(minutes=10)

# A CID file streamed into Redis: a few tries (the file is downloaded again from where it stopped); a file
# whose count or digest does not match is DICT's problem, not a transient one.
STREAM_FILE_RETRY = RetryPolicy(
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[CID_FILE_MISMATCH, INVALID_ARGUMENT, PERMISSION_DENIED],
)
# A batch of repairs: each CID is repaired at most once whatever the retries, so retrying is safe.
REPAIR_RETRY = RetryPolicy(
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=20,
    non_retryable_error_types=[DICT_INCONSISTENT, INVALID_ARGUMENT, PERMISSION_DENIED],
)
# The follower never gives up on DICT: a long outage is waited out (backing off to 2 minutes), and the
# daily reconciliation and the 36-hour alert cover the time it is blind.
FOLLOW_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=0,
    non_retryable_error_types=[INVALID_ARGUMENT, PERMISSION_DENIED],
)


async def publish_outbox(scratch: Scratch, heartbeat: timedelta) -> None:
    """Every notification a round of repairs left in its outbox, to core-events (reconciliation and follower)."""
    await workflow.execute_activity_method(
        CoreEventsPublisher.publish_outbox,
        scratch,
        start_to_close_timeout=OUTBOX_TIMEOUT,
        heartbeat_timeout=heartbeat,
        retry_policy=NOTICE_RETRY,
        summary="publish the repaired entries to core-events",
    )


def require_positive(model: BaseModel, durations: Iterable[str]) -> None:
    """For an input's validator: every duration named must be above zero."""
    bad = [name for name in durations if getattr(model, name) <= timedelta(0)]
    if bad:
        raise ValueError(f"must be positive: {', '.join(bad)}")
