"""Reconciliations while entry events keep flowing through the real ingestion pipeline (starter, Pulsar,
worker), with DICT changed first for each event, as core banking does: nothing converges wrong.

Whatever interleaving of events, snapshots and repairs happens, once the events have landed a second
verification of every key type must be OK at once: the repairs made from an older DICT snapshot never
undid an event, and the events never undid a repair DICT still agreed with.
"""

import asyncio
import uuid
from datetime import timedelta

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from cidsync.bridge.simulator.admin_client import SimulatorAdmin
from cidsync.core_events import Outcome
from cidsync.entry import KeyType
from starters.reconciliation import start_reconciliation
from tests.conftest import BridgeSimulator, PulsarBroker, RedisServer
from tests.e2e.harness import history_events, immediate
from tests.e2e.reconciliation import events_and_reconciliation
from workflows.reconcile_vsync import ReconcileInput, ReconcileResult, ReconcileVSync


async def outcome_of(handle: WorkflowHandle[ReconcileVSync, ReconcileResult]) -> ReconcileResult:
    """The run's result, FAILED ones included (their result travels in the failure's details)."""
    try:
        return await handle.result()
    except WorkflowFailureError as failure:
        cause = failure.cause
        assert isinstance(cause, ApplicationError), cause
        assert cause.type == "ReconciliationFailed", cause
        return ReconcileResult.model_validate(cause.details[0])


async def test_reconciliations_while_events_flow_converge_to_dict(
    temporal_env: WorkflowEnvironment, redis_server: RedisServer, pulsar_broker: PulsarBroker,
    bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin,
) -> None:  # fmt: skip
    async with events_and_reconciliation(temporal_env, redis_server.url, pulsar_broker.url,
                                         bridge_simulator.address, simulator_admin) as flowing:  # fmt: skip
        pipeline, running, core = flowing.pipeline, flowing.running, flowing.core
        participant = pipeline.participants[0]

        async def reconcile_all(trigger: str) -> list[ReconcileResult]:
            requests = [
                ReconcileInput(
                    participant=participant,
                    key_type=k,
                    trigger=trigger,
                    divergence_threshold=10_000,
                    poll_initial=timedelta(seconds=0.5),
                    grace=timedelta(seconds=2),
                )
                for k in KeyType
            ]
            handles = [await start_reconciliation(temporal_env.client, r, running.queue) for r in requests]
            return list(await asyncio.gather(*(outcome_of(h) for h in handles)))

        # In sync first: a history applied through the pipeline and made in DICT.
        before = immediate(history_events(150, [participant], seed=uuid.uuid4().int % 10_000))
        await core.flow(before, per_second=500)
        await core.landed(before)
        # DICT changes behind cidsync's back, then reconciliations run while new events keep coming.
        for index, key_type in enumerate((KeyType.EVP, KeyType.CPF)):
            await simulator_admin.diverge(participant, key_type, add=3, remove=2, alter=1, seed=900 + index)
        during = [
            e.model_copy(update={"sequence": e.sequence + 10_000})
            for e in immediate(history_events(120, [participant], seed=uuid.uuid4().int % 10_000))
        ]
        first, _ = await asyncio.gather(reconcile_all("during events"), core.flow(during, per_second=40))
        await core.landed(during)

        # While events flow, DICT is always a little ahead of the local store (each change is made in DICT
        # first), so a run may use up its rounds and fail loudly; it must never end any other way.
        for result in first:
            assert result.outcome in (Outcome.OK, Outcome.REPAIRED, Outcome.FAILED), result
            if result.outcome is Outcome.FAILED:
                assert result.reason == "DICT still answers NOK after 3 repair rounds", result
        assert sum(r.added + r.removed for r in first) >= 10  # the injected divergence was repaired
        # Once the events have landed, nothing more is repaired, and yet DICT agrees with every pair: no
        # repair from an older snapshot undid an event, none was left undone.
        for key_type in KeyType:
            local = await pipeline.store.vsync(participant, key_type)
            assert (await running.bridge.verify_sync(participant, key_type, local)).ok, key_type
        second = await reconcile_all("after events")
        assert [(r.key_type, r.outcome, r.verifications) for r in second] == [(k, Outcome.OK, 1) for k in KeyType]
