"""The worker's periodic read of every pair's state for the per-pair gauges (`cidsync.telemetry.instruments`).

Every `REFRESH` seconds: the store's verification records (last formal result, last OK, last proof of any
kind) and Temporal's visibility (the reconciliations waiting for an operator's approval, found by their
`CidPhase`). Read from shared state, never from what this process's workflows happened to run, so every
worker replica reports the same values: a gauge a workflow sets lives in the one worker that ran it and
stays there, stale, once another replica takes the run over.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from redis.exceptions import RedisError
from temporalio.client import Client
from temporalio.service import RPCError

from cidsync.entry import KeyType
from cidsync.naming import AWAITING_APPROVAL, KEY_TYPE, PARTICIPANT
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys
from cidsync.telemetry import instruments
from cidsync.telemetry.instruments import PairState
from workflows.reconcile_vsync import ReconcileVSync

logger = logging.getLogger(__name__)

REFRESH = 30.0
AWAITING_QUERY = (
    f'WorkflowType = "{ReconcileVSync.__name__}" AND ExecutionStatus = "Running" AND CidPhase = "{AWAITING_APPROVAL}"'
)
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


async def read_approvals(client: Client) -> dict[Pair, float]:
    """Each pair with a reconciliation waiting for approval: when the oldest such run started (epoch s)."""
    since: dict[Pair, float] = {}
    async for run in client.list_workflows(AWAITING_QUERY):
        attributes = run.typed_search_attributes
        participant, key_type = attributes.get(PARTICIPANT), attributes.get(KEY_TYPE)
        if participant is not None and key_type is not None:
            pair = (participant, key_type)
            since[pair] = min(since.get(pair, run.start_time.timestamp()), run.start_time.timestamp())
    return since


def pair_states(verifications: dict[Pair, PairState], approvals: dict[Pair, float]) -> dict[Pair, PairState]:
    states = dict(verifications)
    for pair, since in approvals.items():
        states[pair] = replace(states.get(pair, PairState()), awaiting_approval_since=since)
    return states


async def refresh_pair_states(store: CIDStore, client: Client, participants: tuple[str, ...]) -> None:
    """Runs until cancelled. A failed read keeps its last values (readiness reports the dependency)."""
    verifications: dict[Pair, PairState] = {}
    approvals: dict[Pair, float] = {}
    while True:
        try:
            verifications = await read_verifications(store, participants)
        except RedisError as error:
            logger.debug("could not read the pairs' verifications: %s", error)
        try:
            approvals = await read_approvals(client)
        except RPCError as error:
            logger.debug("could not list the reconciliations awaiting approval: %s", error)
        instruments.pair_gauges.update(pair_states(verifications, approvals))
        await asyncio.sleep(REFRESH)
