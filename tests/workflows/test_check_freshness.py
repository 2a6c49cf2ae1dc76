"""CheckVerificationFreshness: DICT's 36 hours, and the alert's three forms (metric, log, core event)."""

import asyncio
import logging
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from activities.cid_store import PairsRequest
from activities.core_events import NoticeInput
from cidsync.core_events import CoreEventType
from cidsync.entry import KeyType, PairRef
from cidsync.store.models import PairVerification
from cidsync_tooling.devstack.processes import free_port
from tests.helpers.workers import current_worker
from workflows.check_freshness import CheckVerificationFreshness, FreshnessInput


async def test_a_pair_not_verified_ok_within_36_hours_raises_the_alert(
    temporal_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    fresh, old, never = "11111111", "22222222", "33333333"
    last_ok = {fresh: now - timedelta(hours=35), old: now - timedelta(hours=37), never: None}
    notices: list[NoticeInput] = []

    @activity.defn(name="last_verifications")
    async def last_verifications(request: PairsRequest) -> list[PairVerification]:
        return [
            PairVerification(
                participant=p.participant,
                key_type=p.key_type,
                last_result="OK",
                last_at=last_ok[p.participant],
                last_ok_at=last_ok[p.participant],
            )
            for p in request.pairs
        ]

    @activity.defn(name="publish_notice")
    async def publish_notice(request: NoticeInput) -> None:
        notices.append(request)

    # A worker whose runtime exports workflow metrics on Prometheus. `cidsync worker --metrics-bind` routes
    # them through OpenTelemetry instead (tests/telemetry); the workflow records them the same way.
    bind = f"127.0.0.1:{free_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host, data_converter=pydantic_data_converter, runtime=runtime
    )
    queue = f"fresh-{uuid.uuid4()}"
    pairs = [PairRef(participant=p, key_type=KeyType.CPF) for p in (fresh, old, never)]
    with caplog.at_level(logging.WARNING):
        async with current_worker(
            client,
            task_queue=queue,
            workflows=[CheckVerificationFreshness],
            activities=[last_verifications, publish_notice],
        ):
            stale = await client.execute_workflow(
                CheckVerificationFreshness.run,
                FreshnessInput(pairs=pairs),
                id=f"fresh-{uuid.uuid4()}",
                task_queue=queue,
            )

    assert [s.participant for s in stale] == [old, never]
    assert [n.notice.event_type for n in notices] == [CoreEventType.VERIFICATION_STALE] * 2
    assert [n.notice.participant for n in notices] == [old, never]
    assert sum("last verified OK" in r.getMessage() for r in caplog.records) == 2
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://{bind}/metrics").read().decode())
    counted = [line for line in metrics.splitlines() if line.startswith("cidsync_verification_stale")]
    assert any(f'participant="{old}"' in line and line.endswith(" 1") for line in counted), counted
    assert any(f'participant="{never}"' in line for line in counted)
    assert not any(f'participant="{fresh}"' in line for line in counted)
