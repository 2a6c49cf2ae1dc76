"""`prove_sync` against the real simulator and Redis: a pair proved while changes are in flight, and not
proved when it truly differs; the local set ahead of DICT's log, seen as of the log's point."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from activities.proof import ConfirmInput, ProofActivities, ProveInput
from cidsync.bridge.budget import Bucket, DictBudget
from cidsync.bridge.client import BridgeClient
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.e2e.reconciliation import apply_locally, pair_entries, seed_pair
from tests.helpers.servers import BridgeSimulator, RedisServer


@pytest.fixture
async def proofs(redis_server: RedisServer, bridge_simulator: BridgeSimulator) -> AsyncIterator[ProofActivities]:
    store = CIDStore(redis_client(redis_server.url), b"proof-secret")
    async with BridgeClient(bridge_simulator.address) as bridge:
        yield ProofActivities(store, bridge)
    await store.close()


def ask(participant: str, window: float = 10.0, settle: float = 0.0) -> ProveInput:
    """The test simulator shows each event at once: its log needs no settling unless a test asks for it."""
    return ProveInput(
        participant=participant,
        key_type=KeyType.PHONE,
        window=timedelta(seconds=window),
        settle=timedelta(seconds=settle),
    )


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
    local_vsync = await proofs.store.view.vsync(participant, KeyType.PHONE)
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


async def test_local_changes_the_log_does_not_show_yet_are_undone_for_the_log_proof(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """Core's last changes reached the local set before DICT's log showed them (the log is read up to
    `settle` ago): the log proof sees the local set as of the log's point, and the formal one as it is."""
    entries = pair_entries(participant, KeyType.PHONE, 30, seed=34)
    await seed_pair(simulator_admin, proofs.store, entries[:27])
    await asyncio.sleep(1.5)
    await seed_pair(simulator_admin, proofs.store, entries[27:])  # in DICT and local, not in the read log
    before = await proofs.prove_sync(ask(participant, settle=0.0).model_copy(update={"formal": False}))
    proof = await proofs.prove_sync(ask(participant, settle=1.0))
    assert (before.kind, before.in_flight) == ("log", 0)
    assert (proof.kind, proof.formal_ok, proof.log_ok) == ("formal", True, True)
    log_only = await proofs.prove_sync(ask(participant, settle=1.0).model_copy(update={"formal": False}))
    assert (log_only.kind, log_only.in_flight, log_only.taken) == ("log", 3, dict.fromkeys(log_only.taken, False))
    assert log_only.vsync != before.vsync  # the VSync as of the log's point: 27 entries, not 30
    assert (
        await proofs.confirm_landed(ConfirmInput(participant=participant, key_type=KeyType.PHONE, taken=log_only.taken))
        == []
    )


async def test_a_local_change_dict_never_saw_is_undone_then_withdrawn(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """A CID only the local set got (an event for a change DICT refused) looks, for a moment, like the
    local set being ahead of the log: the log proof takes it, and `confirm_landed` finds DICT without it."""
    entries = pair_entries(participant, KeyType.PHONE, 21, seed=35)
    await seed_pair(simulator_admin, proofs.store, entries[:20])
    await asyncio.sleep(1.5)
    await apply_locally(proofs.store, entries[20:])  # never in DICT
    proof = await proofs.prove_sync(ask(participant, settle=1.0))
    assert (proof.kind, proof.formal_ok, proof.in_flight) == ("log", False, 1)
    missing = await proofs.confirm_landed(
        ConfirmInput(participant=participant, key_type=KeyType.PHONE, taken=proof.taken)
    )
    assert missing == list(proof.taken)  # the proof is withdrawn


def test_the_settle_is_shorter_than_the_window() -> None:
    with pytest.raises(ValueError, match="settle"):
        ask("12345678", window=1.0, settle=1.0)


async def test_a_log_proof_of_an_instant_before_it_was_asked_is_no_proof(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """DICT diverged a moment ago, inside the log's settle: the log read ends before the divergence, where the
    pair was in sync. That speaks of the past: a reconciliation asks for a point after it began."""
    await seed_pair(simulator_admin, proofs.store, pair_entries(participant, KeyType.PHONE, 20, seed=36))
    await asyncio.sleep(1.5)
    asked = datetime.now(UTC)
    await simulator_admin.diverge(participant, KeyType.PHONE, add=1, remove=1, seed=5)
    past = await proofs.prove_sync(ask(participant, settle=1.0).model_copy(update={"formal": False}))
    assert (past.kind, past.log_point < asked) == ("log", True)  # true of its instant, recorded as of it
    assert past.at == past.log_point
    # Asked for a point after the divergence: the log cannot prove it yet. The formal proof takes the
    # divergence DICT's recent log shows as in flight, provisionally, and `confirm_landed` withdraws it.
    proof = await proofs.prove_sync(ask(participant, settle=1.0).model_copy(update={"not_before": asked}))
    assert (proof.kind, proof.log_ok, proof.in_flight) == ("formal", False, 2)
    missing = await proofs.confirm_landed(
        ConfirmInput(participant=participant, key_type=KeyType.PHONE, taken=proof.taken)
    )
    assert sorted(missing) == sorted(proof.taken)


async def test_a_log_out_of_budget_leaves_the_formal_proof(
    proofs: ProofActivities, simulator_admin: SimulatorAdmin, redis_server: RedisServer, participant: str
) -> None:
    """DICT's log refused for now (here: the participant's budget spent): no log proof, but a quiet pair is
    still proved formally at once, and the wait is told."""
    await seed_pair(simulator_admin, proofs.store, pair_entries(participant, KeyType.PHONE, 10, seed=37))
    redis = redis_client(redis_server.url)
    budget = DictBudget(redis, {"ListCidSetEvents": Bucket(1, 2)})  # one token (2 x 0.9, less 1)
    try:
        await budget.take(participant, "ListCidSetEvents")
        limited = ProofActivities(proofs.store, BridgeClient(proofs.bridge.address, budget=budget))
        proof = await limited.prove_sync(ask(participant))
        await limited.bridge.close()
    finally:
        await redis.aclose()
    assert (proof.kind, proof.log_ok) == ("formal", False)
    assert proof.retry_after > 0
