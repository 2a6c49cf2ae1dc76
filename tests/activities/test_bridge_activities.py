"""Bridge activities against the simulator: DICT's answers become the right Temporal retry semantics."""

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.bridge import BridgeActivities, EntryRequest, PairRef, VerifyRequest
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.simulator.admin_client import SimulatorAdmin
from cidsync.entry import KeyType
from tests.conftest import BridgeSimulator

ZERO = "0" * 64


@pytest.fixture
async def bridge(bridge_simulator: BridgeSimulator) -> AsyncIterator[BridgeActivities]:
    async with BridgeClient(bridge_simulator.address, retry_attempts=2) as client:
        yield BridgeActivities(client)


async def test_rate_limit_is_retryable_after_dicts_retry_after(bridge: BridgeActivities, participant: str) -> None:
    env = ActivityEnvironment()
    for _ in range(50):
        assert (await env.run(bridge.verify_sync, VerifyRequest(participant=participant, key_type=KeyType.CPF,
                                                                  vsync=ZERO))).ok  # fmt: skip
    with pytest.raises(ApplicationError) as limited:
        await env.run(bridge.verify_sync, VerifyRequest(participant=participant, key_type=KeyType.CPF, vsync=ZERO))
    assert limited.value.type == "RateLimited"
    assert not limited.value.non_retryable
    assert limited.value.next_retry_delay is not None
    assert timedelta(seconds=5) < limited.value.next_retry_delay <= timedelta(seconds=6)


async def test_create_file_failures_are_final_for_the_workflow_to_decide(
    bridge: BridgeActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    await simulator_admin.set_faults(fail_next={"CreateCidSetFile": 1})
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(
            bridge.create_cid_set_file, PairRef(participant=participant, key_type=KeyType.EVP)
        )
    assert (failed.value.type, failed.value.non_retryable) == ("Unavailable", True)
    created = await ActivityEnvironment().run(
        bridge.create_cid_set_file, PairRef(participant=participant, key_type=KeyType.EVP)
    )
    assert created.file_id


async def test_invalid_requests_are_not_retried_and_a_gone_entry_is_none(
    bridge: BridgeActivities, participant: str
) -> None:
    with pytest.raises(ApplicationError) as invalid:
        await ActivityEnvironment().run(bridge.verify_sync, VerifyRequest(participant="1", key_type=KeyType.CPF,
                                                                           vsync=ZERO))  # fmt: skip
    assert (invalid.value.type, invalid.value.non_retryable) == ("InvalidArgument", True)
    gone = await ActivityEnvironment().run(bridge.get_entry_by_cid, EntryRequest(participant=participant, cid=ZERO))
    assert gone is None
