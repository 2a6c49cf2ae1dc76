"""`prove_sync` against the real simulator and Redis: a pair proved while changes are in flight, and not
proved when it truly differs."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from activities.proof import ProofActivities, ProveInput
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.simulator.admin_client import SimulatorAdmin
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from tests.conftest import BridgeSimulator, RedisServer
from tests.e2e.reconciliation import apply_locally, pair_entries, seed_pair


@pytest.fixture
async def proofs(redis_server: RedisServer, bridge_simulator: BridgeSimulator) -> AsyncIterator[ProofActivities]:
    store = CIDStore(redis_client(redis_server.url), b"proof-secret")
    async with BridgeClient(bridge_simulator.address) as bridge:
        yield ProofActivities(store, bridge)
    await store.close()


def ask(participant: str, window: float = 10.0) -> ProveInput:
    return ProveInput(participant=participant, key_type=KeyType.PHONE, window=timedelta(seconds=window))


async def test_a_pair_in_sync_is_proved_formally_and_by_the_log(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await seed_pair(simulator_admin, proofs.store, pair_entries(participant, KeyType.PHONE, 30, seed=31))
    proof = await proofs.prove_sync(ask(participant))
    assert (proof.kind, proof.formal_ok, proof.log_ok, proof.in_flight) == ("formal", True, True, 0)


async def test_changes_in_flight_are_taken_from_dicts_log_and_the_pair_is_proved(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """Core made 4 entries and removed 1 in DICT; their events have not reached the local set yet."""
    entries = pair_entries(participant, KeyType.PHONE, 30, seed=32)
    await seed_pair(simulator_admin, proofs.store, entries[:26])
    await simulator_admin.load(entries[26:])  # in DICT, not yet local
    local_vsync = await proofs.store.vsync(participant, KeyType.PHONE)
    proof = await proofs.prove_sync(ask(participant))
    assert (proof.kind, proof.formal_ok, proof.in_flight) == ("formal", True, 4)
    assert proof.vsync != local_vsync  # the local VSync alone would have been NOK
    await apply_locally(proofs.store, entries[26:])  # the events land: nothing is in flight any more
    assert (await proofs.prove_sync(ask(participant))).in_flight == 0


async def test_a_real_divergence_is_no_proof(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """DICT changed behind cidsync's back before the window: nothing in the log explains the difference."""
    await seed_pair(simulator_admin, proofs.store, pair_entries(participant, KeyType.PHONE, 30, seed=33))
    await simulator_admin.diverge(participant, KeyType.PHONE, add=1, remove=1, seed=4)
    await asyncio.sleep(0.3)  # the changes are older than the window: they cannot be in flight
    proof = await proofs.prove_sync(ask(participant, window=0.1))
    assert (proof.kind, proof.formal_ok, proof.log_ok, proof.in_flight) == ("none", False, False, 0)
    log_only = await proofs.prove_sync(ask(participant, window=0.1).model_copy(update={"formal": False}))
    assert (log_only.kind, log_only.formal_ok) == ("none", None)  # no VerifySync spent
