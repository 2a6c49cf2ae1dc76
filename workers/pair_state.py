"""The worker's periodic read of every pair's state for the per-pair gauges (`cidsync.telemetry.instruments`).

Every `REFRESH` seconds: the store's verification records (last formal result, last OK, last proof of any
kind) and Temporal's visibility (the running reconciliations by their `CidPhase`, among them those waiting
for an operator's approval). Read from shared state, never from what this process's workflows happened to run, so every
worker replica reports the same values: a gauge a workflow sets lives in the one worker that ran it and
stays there, stale, once another replica takes the run over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, replace

from redis.exceptions import RedisError
from temporalio.client import Client
from temporalio.service import RPCError

from cidsync.entry import KeyType
from cidsync.naming import AWAITING_APPROVAL, KEY_TYPE, PARTICIPANT, PHASE
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys
from cidsync.telemetry import instruments
from cidsync.telemetry.instruments import PairState
from workflows.reconcile_vsync import ReconcileVSync

logger = logging.getLogger(__name__)

REFRESH = 30.0
RUNNING_QUERY = f'WorkflowType = "{ReconcileVSync.__name__}" AND ExecutionStatus = "Running"'
UNKNOWN_PHASE = "unknown"  # a run that has not said its phase yet (or was started before it did)
Pair = tuple[str, str]


async def read_verifications(store: CIDStore, participants: tuple[str, ...]) -> dict[Pair, PairState]:
    """Every key type of the configured participants (CIDSYNC_PARTICIPANTS), else every pair the store
    holds (a scan of the keyspace: fine on a dev stack, not on a store of millions of keys)."""
    found_pairs = [(p, k) for p in participants for k in KeyType] if participants else await store.view.pairs()
    verifications = await store.view.last_verifications([PairKeys(p, k) for p, k in found_pairs])
    return {
        (v.participant, v.key_type.value): PairState(
            last_ok=v.last_ok_at.timestamp() if v.last_ok_at else None,
            last_proof=v.last_proof_at.timestamp() if v.last_proof_at else None,
            nok=v.last_result == "NOK",
        )
        for v in verifications
    }


@dataclass(frozen=True)
class Reconciliations:
    """The reconciliations running now: how many are in each phase, and for each pair with one waiting
    for an operator's approval, when the oldest such run started (epoch seconds)."""

    phases: dict[str, int]
    awaiting_since: dict[Pair, float]


async def read_reconciliations(client: Client) -> Reconciliations:
    phases: Counter[str] = Counter()
    since: dict[Pair, float] = {}
    async for run in client.list_workflows(RUNNING_QUERY):
        attributes = run.typed_search_attributes
        phase = attributes.get(PHASE) or UNKNOWN_PHASE
        phases[phase] += 1
        participant, key_type = attributes.get(PARTICIPANT), attributes.get(KEY_TYPE)
        if phase == AWAITING_APPROVAL and participant is not None and key_type is not None:
            pair, started = (participant, key_type), run.start_time.timestamp()
            since[pair] = min(since.get(pair, started), started)
    return Reconciliations(dict(phases), since)


def pair_states(verifications: dict[Pair, PairState], approvals: dict[Pair, float]) -> dict[Pair, PairState]:
    states = dict(verifications)
    for pair, since in approvals.items():
        states[pair] = replace(states.get(pair, PairState()), awaiting_approval_since=since)
    return states


async def refresh_pair_states(store: CIDStore, client: Client, participants: tuple[str, ...]) -> None:
    """Runs until cancelled. A failed read keeps its last values (readiness reports the dependency)."""
    verifications: dict[Pair, PairState] = {}
    running = Reconciliations({}, {})
    while True:
        try:
            verifications = await read_verifications(store, participants)
        except RedisError as error:
            logger.debug("could not read the pairs' verifications: %s", error)
        try:
            running = await read_reconciliations(client)
        except RPCError as error:
            logger.debug("could not list the running reconciliations: %s", error)
        instruments.pair_gauges.update(pair_states(verifications, running.awaiting_since))
        instruments.reconciliation_phases.update(running.phases)
        await asyncio.sleep(REFRESH)
