"""Bridge activities against the simulator: DICT's answers become the right Temporal retry semantics."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.bridge import BridgeActivities, CreateFileRequest, VerifyRequest, temporal_error
from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.entry import KeyType
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.helpers.servers import BridgeSimulator

ZERO = "0" * 64


@pytest.fixture
async def bridge(bridge_simulator: BridgeSimulator) -> AsyncIterator[BridgeActivities]:
    async with BridgeClient(bridge_simulator.address, retry_attempts=2) as client:
        yield BridgeActivities(client)


async def test_rate_limit_is_retryable_after_dicts_retry_after(bridge: BridgeActivities, participant: str) -> None:
    env = ActivityEnvironment()
    for _ in range(50):
        assert (
            await env.run(bridge.verify_sync, VerifyRequest(participant=participant, key_type=KeyType.CPF, vsync=ZERO))
        ).ok
    with pytest.raises(ApplicationError) as limited:
        await env.run(bridge.verify_sync, VerifyRequest(participant=participant, key_type=KeyType.CPF, vsync=ZERO))
    assert limited.value.type == "RateLimited"
    assert not limited.value.non_retryable
    assert limited.value.next_retry_delay is not None
    assert timedelta(seconds=5) < limited.value.next_retry_delay <= timedelta(seconds=6)


async def test_create_file_is_idempotent_so_a_transient_failure_is_retried_without_a_second_file(
    bridge: BridgeActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    request = CreateFileRequest(participant=participant, key_type=KeyType.EVP, request_id=str(uuid.uuid4()))
    await simulator_admin.set_faults(fail_next={"CreateCidSetFile": 1})
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(bridge.create_cid_set_file, request)
    assert (failed.value.type, failed.value.non_retryable) == ("Unavailable", False)
    before = (await simulator_admin.stats())["files_created"]
    created = await ActivityEnvironment().run(bridge.create_cid_set_file, request)
    again = await ActivityEnvironment().run(bridge.create_cid_set_file, request)  # e.g. the answer was lost
    assert created.file_id == again.file_id
    assert (await simulator_admin.stats())["files_created"] == before + 1


async def test_a_rate_limited_file_request_is_final_with_its_retry_after(
    bridge: BridgeActivities, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    refused = None
    for _ in range(250):  # DICT's bucket holds 200 files
        request = CreateFileRequest(participant=participant, key_type=KeyType.EVP, request_id=str(uuid.uuid4()))
        try:
            await ActivityEnvironment().run(bridge.create_cid_set_file, request)
        except ApplicationError as error:
            refused = error
            break
    assert refused is not None
    assert (refused.type, refused.non_retryable) == ("RateLimited", True)
    assert float(refused.details[0]) > 0


async def test_invalid_requests_are_not_retried(bridge: BridgeActivities) -> None:
    with pytest.raises(ApplicationError) as invalid:
        await ActivityEnvironment().run(
            bridge.verify_sync, VerifyRequest(participant="1", key_type=KeyType.CPF, vsync=ZERO)
        )
    assert (invalid.value.type, invalid.value.non_retryable) == ("InvalidArgument", True)


async def test_no_bridge_activity_returns_an_entry(bridge: BridgeActivities) -> None:
    """An entry is personal data: GetEntryByCid is called inside the repair activity, never as an activity
    whose result Temporal would keep in history (docs/design.md §5)."""
    assert not hasattr(bridge, "get_entry_by_cid")


def test_the_retries_wait_the_time_dict_gave_and_a_refused_answer_is_asked_again() -> None:
    """503 with Retry-After: the next attempt waits that long; an answer refused for its signature or a
    corrupt file (DATA_LOSS) and DICT's 500 are retried; a malformed request or a refusal is final."""
    unavailable = temporal_error(errors.Unavailable("DICT down", "VerifySync", retry_after=7.0))
    assert (unavailable.next_retry_delay, unavailable.non_retryable) == (timedelta(seconds=7), False)
    assert temporal_error(errors.Unavailable("DICT down", "VerifySync")).next_retry_delay is None
    assert not temporal_error(errors.DataLoss("response signature refused")).non_retryable
    assert not temporal_error(errors.Internal("DICT failed")).non_retryable
    assert temporal_error(errors.InvalidArgument("RequestSignatureInvalid")).non_retryable
    assert temporal_error(errors.PermissionDenied("Forbidden")).non_retryable
