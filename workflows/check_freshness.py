"""CheckVerificationFreshness: alert when a pair's last OK verification is older than DICT allows.

DICT expects every (participant, key type) to be verified OK at least every 36 hours (docs/design.md §1). The
daily verification should keep every pair far inside that; this check, on its own hourly Schedule, is what
notices when it does not (a failing DICT, a reconciliation awaiting approval, a stopped worker). The alert
is three things at once: a metric (`cidsync_verification_stale`, per pair), a warning log, and a
`cid.verification.stale` event on `core-events`.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from workflows.versioning import SHORT_RUN

with workflow.unsafe.imports_passed_through():
    from activities.cid_store import PairsRequest, StoreActivities
    from activities.core_events import CoreEventsPublisher, NoticeInput
    from cidsync.core_events import VerificationStale, event_id
    from cidsync.entry import PairRef
    from cidsync.store.models import PairVerification
    from workflows.policies import NOTICE_RETRY, NOTICE_TIMEOUT, STORE_RETRY, STORE_TIMEOUT

MAX_AGE = timedelta(hours=36)


class FreshnessInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    pairs: list[PairRef]
    max_age: timedelta = MAX_AGE


@workflow.defn(versioning_behavior=SHORT_RUN)
class CheckVerificationFreshness:
    @workflow.run
    async def run(self, input: FreshnessInput) -> list[PairVerification]:
        found: list[PairVerification] = await workflow.execute_activity_method(
            StoreActivities.last_verifications,
            PairsRequest(pairs=input.pairs),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary=f"the last verifications of {len(input.pairs)} pairs",
        )
        now = workflow.now()
        stale = [p for p in found if p.last_ok_at is None or now - p.last_ok_at > input.max_age]
        counter = workflow.metric_meter().create_counter(
            "cidsync_verification_stale", "pairs whose last OK verification is older than allowed"
        )
        for pair in stale:
            counter.add(1, {"participant": pair.participant, "key_type": pair.key_type.value})
            last = pair.last_ok_at.isoformat() if pair.last_ok_at else "never"
            workflow.logger.warning(
                "VSync of %s %s last verified OK %s: older than %s",
                pair.participant,
                pair.key_type,
                last,
                input.max_age,
            )
            await workflow.execute_activity_method(
                CoreEventsPublisher.publish_notice,
                NoticeInput(
                    notice=VerificationStale(
                        event_id=event_id(workflow.info().run_id, pair.participant, pair.key_type.value),
                        occurred_at=now,
                        participant=pair.participant,
                        key_type=pair.key_type,
                        last_ok_at=pair.last_ok_at,
                        max_age_hours=input.max_age.total_seconds() / 3600,
                    )
                ),
                start_to_close_timeout=NOTICE_TIMEOUT,
                retry_policy=NOTICE_RETRY,
                summary=f"notify core: {pair.participant} {pair.key_type.value} stale",
            )
        workflow.set_current_details(f"{len(stale)} of {len(found)} pairs stale (max age {input.max_age})")
        return stale
