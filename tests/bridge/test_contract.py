"""Contract tests: the production client against the DICT simulator over real loopback gRPC."""

import asyncio
import hashlib
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from cidsync.bridge.client import BridgeClient
from cidsync.bridge.errors import FailedPrecondition, InvalidArgument, NotFound
from cidsync.bridge.models import CIDEventType, CIDSetFile, FileStatus
from cidsync.cid import cid, vsync
from cidsync.entry import Entry, KeyType
from cidsync.events import EventType
from cidsync.follow import Cursor, page_consistent
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.simulator.dict_state import ChangeOutcome
from cidsync_tooling.simulator.v1 import admin_pb2
from cidsync_tooling.synthetic import synthetic_entry
from tests.domain.test_cid import _rfc2104_hmac_sha256
from tests.helpers.servers import BridgeSimulator

KEY_TYPE = KeyType.EVP


def entries_for(participant: str, count: int, key_type: KeyType = KEY_TYPE) -> list[Entry]:
    """Entries unique to this participant (ids and keys are drawn from a seed made of it)."""
    rng = random.Random(f"{participant}:{key_type}")
    return [synthetic_entry(rng, participant, key_type) for _ in range(count)]


def independent_vsync(entries: list[Entry]) -> str:
    """The VSync from our own oracle: RFC 2104 HMAC from raw SHA-256, XOR of the integers."""
    acc = 0
    for e in entries:
        attributes = "&".join(
            [
                e.key_type.value,
                e.key,
                e.owner_tax_id,
                e.owner_name,
                e.owner_trade_name or "",
                e.participant,
                e.branch or "",
                e.account_number,
                e.account_type.value,
            ]
        )
        acc ^= int(_rfc2104_hmac_sha256(e.request_id.bytes, attributes.encode()), 16)
    return format(acc, "064x")


@pytest.fixture
async def client(bridge_simulator: BridgeSimulator) -> AsyncIterator[BridgeClient]:
    async with BridgeClient(bridge_simulator.address, deadline=10) as bridge:
        yield bridge


async def wait_available(client: BridgeClient, file: CIDSetFile) -> CIDSetFile:
    for _ in range(100):
        if file.status.final:
            return file
        await asyncio.sleep(0.05)
        file = await client.get_cid_set_file(file.participant, file.file_id)
    raise AssertionError(f"the file stayed {file.status}")


async def test_verify_ok_and_nok_against_an_independent_vsync(
    client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    entries = entries_for(participant, 40)
    await simulator_admin.load(entries)
    expected = independent_vsync(entries)
    assert (await client.verify_sync(participant, KEY_TYPE, expected)).ok
    assert not (await client.verify_sync(participant, KEY_TYPE, independent_vsync(entries[1:]))).ok
    # Another key type of the same participant is empty: its VSync is 64 zeros.
    assert (await client.verify_sync(participant, KeyType.CPF, "0" * 64)).ok

    altered = entries[0].model_copy(update={"account_number": "999"})
    await simulator_admin.alter(altered)
    assert not (await client.verify_sync(participant, KEY_TYPE, expected)).ok
    assert (await client.verify_sync(participant, KEY_TYPE, independent_vsync([altered, *entries[1:]]))).ok


async def test_cid_file_lifecycle_pages_and_stream(
    client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    entries = entries_for(participant, 25)
    await simulator_admin.load(entries)
    expected = sorted(cid(e) for e in entries)

    file = await client.create_cid_set_file(participant, KEY_TYPE)
    assert file.status is FileStatus.REQUESTED
    file = await wait_available(client, file)
    assert file.status is FileStatus.AVAILABLE
    assert file.cid_count == 25
    content = "".join(c + "\n" for c in expected).encode()
    assert (file.byte_size, file.sha256) == (len(content), hashlib.sha256(content).hexdigest())

    paged: list[str] = []
    token = ""
    while True:
        page = await client.get_cid_page(participant, file.file_id, token, page_size=7)
        assert page.offset == len(paged)
        paged += page.cids
        token = page.next_page_token
        if not token:
            break
    assert paged == expected

    streamed = [c async for page in client.cid_pages(participant, file.file_id, page_size=4) for c in page.cids]
    assert streamed == expected
    # Resuming from a page token continues exactly after that page.
    first = await client.get_cid_page(participant, file.file_id, "", page_size=10)
    pages = client.cid_pages(participant, file.file_id, first.next_page_token, 10)
    rest = [c async for page in pages for c in page.cids]
    assert first.cids + rest == expected


async def test_file_errors(client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str) -> None:
    with pytest.raises(NotFound):
        await client.get_cid_set_file(participant, str(uuid.uuid4()))
    await simulator_admin.set_faults(file_outcome=FileStatus.ERROR)
    file = await wait_available(client, await client.create_cid_set_file(participant, KEY_TYPE))
    assert file.status is FileStatus.ERROR
    with pytest.raises(FailedPrecondition, match="ERROR, not AVAILABLE"):
        await client.get_cid_page(participant, file.file_id)
    await simulator_admin.set_faults()
    good = await wait_available(client, await client.create_cid_set_file(participant, KEY_TYPE))
    with pytest.raises(InvalidArgument, match="page_token"):
        await client.get_cid_page(participant, good.file_id, "not-a-token")


async def test_entry_by_cid(client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str) -> None:
    entries = entries_for(participant, 3, KeyType.CNPJ)
    cids = await simulator_admin.load(entries)
    found = await client.get_entry_by_cid(participant, cids[1])
    assert found.entry == entries[1].in_dict()  # DICT's entry: no entry id
    assert found.request_id == entries[1].request_id
    assert cid(found.entry, found.request_id) == cids[1]
    with pytest.raises(NotFound):
        await client.get_entry_by_cid(participant, "0" * 64)
    with pytest.raises(NotFound):  # another participant's entry is not visible
        await client.get_entry_by_cid("00000001", cids[1])
    with pytest.raises(InvalidArgument, match="64 lowercase hexadecimal"):
        await client.get_entry_by_cid(participant, "XYZ")


async def test_cid_set_events(client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    cids = await simulator_admin.load(entries_for(participant, 3, KeyType.PHONE))
    await simulator_admin.remove([cids[0]])
    end = datetime.now(UTC) + timedelta(seconds=1)
    listed = await client.list_cid_set_events(participant, KeyType.PHONE, start, end, limit=200)
    assert [(e.type, e.cid) for e in listed.events] == [
        *((CIDEventType.ADDED, c) for c in cids),
        (CIDEventType.REMOVED, cids[0]),
    ]
    assert not listed.has_more
    assert listed.verifier_start == vsync(cids[:1])  # DICT's VSync after the page's first event
    assert listed.verifier_end == vsync(cids[1:])
    first = await client.list_cid_set_events(participant, KeyType.PHONE, start, end, limit=2)
    assert first.has_more
    assert first.verifier_end == vsync(cids[:2])  # just after the page's last event
    with pytest.raises(InvalidArgument, match="limit: must be 1 to 200"):
        await client.list_cid_set_events(participant, KeyType.PHONE, start, end, limit=201)


async def test_cid_set_events_paged_by_time_end_at_dicts_vsync(
    client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    """450 changes read 200 at a time from a cursor: each once, and the last page's verifier is DICT's VSync."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    entries = entries_for(participant, 400, KeyType.EMAIL)
    cids = await simulator_admin.load(entries)
    await simulator_admin.remove(cids[:50])
    cursor, taken, pages = Cursor(start=start), [], 0
    while True:
        answer = await client.list_cid_set_events(participant, KeyType.EMAIL, cursor.start, datetime.now(UTC))
        assert page_consistent(answer)
        fresh, cursor = cursor.take(answer)
        taken += fresh
        pages += 1
        if not answer.has_more:
            break
    assert pages == 3
    assert [(e.type, e.cid) for e in taken] == [
        *((CIDEventType.ADDED, c) for c in cids),
        *((CIDEventType.REMOVED, c) for c in cids[:50]),
    ]
    assert answer.verifier_end == independent_vsync(entries[50:])


async def test_invalid_requests_are_invalid_argument(client: BridgeClient, participant: str) -> None:
    with pytest.raises(InvalidArgument, match="participant"):
        await client.verify_sync("123", KEY_TYPE, "0" * 64)
    with pytest.raises(InvalidArgument, match="64 lowercase hexadecimal"):
        await client.verify_sync(participant, KEY_TYPE, "F" * 64)


async def test_core_changes_are_applied_in_order_and_repeats_and_conflicts_are_told_apart(
    client: BridgeClient, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    first, second = entries_for(participant, 2, KeyType.EMAIL)
    moved = first.model_copy(update={"account_number": "7654321"})
    same_key = second.model_copy(update={"key": first.key})
    results = await simulator_admin.apply_changes(
        [
            (EventType.CREATED, first),
            (EventType.CREATED, first),  # core published it twice
            (EventType.CREATED, same_key),  # another entry with a key DICT holds
            (EventType.UPDATED, moved),
            (EventType.UPDATED, moved),
            (EventType.UPDATED, second),  # never registered
            (EventType.DELETED, moved),
            (EventType.DELETED, moved),
        ]
    )
    assert [outcome for outcome, _ in results] == [
        ChangeOutcome.APPLIED,
        ChangeOutcome.ALREADY,
        ChangeOutcome.REFUSED,
        ChangeOutcome.APPLIED,
        ChangeOutcome.ALREADY,
        ChangeOutcome.REFUSED,
        ChangeOutcome.APPLIED,
        ChangeOutcome.ALREADY,
    ]
    assert "already in DICT" in results[2][1]
    assert "no entry" in results[5][1]
    assert [reason for outcome, reason in results if outcome is not ChangeOutcome.REFUSED] == [""] * 6
    assert (await client.verify_sync(participant, KeyType.EMAIL, "0" * 64)).ok  # all gone again


async def test_a_change_the_simulator_cannot_read_is_invalid_argument(simulator_admin: SimulatorAdmin) -> None:
    with pytest.raises(InvalidArgument, match="change #1"):
        await simulator_admin._call(
            "ApplyChanges",
            admin_pb2.ApplyChangesRequest(
                changes=[admin_pb2.EntryChange(kind=admin_pb2.CHANGE_KIND_CREATED, entry_json="{}")]
            ),
        )
    with pytest.raises(InvalidArgument, match="CREATED, UPDATED or DELETED"):
        await simulator_admin._call("ApplyChanges", admin_pb2.ApplyChangesRequest(changes=[admin_pb2.EntryChange()]))


async def test_a_file_is_read_as_its_participant(client: BridgeClient, participant: str) -> None:
    """DICT wants the requesting participant on every file read; another participant's file is not found."""
    file = await wait_available(client, await client.create_cid_set_file(participant, KEY_TYPE))
    assert (await client.get_cid_set_file(participant, file.file_id)).file_id == file.file_id
    with pytest.raises(NotFound):
        await client.get_cid_set_file("00000001", file.file_id)
    with pytest.raises(NotFound):
        await client.get_cid_page("00000001", file.file_id)
    with pytest.raises(InvalidArgument, match="participant"):
        await client.get_cid_set_file("", file.file_id)


async def test_a_rate_limit_bucket_is_read_without_spending_a_token(client: BridgeClient, participant: str) -> None:
    before = await client.get_rate_limit_bucket(participant, "VerifySync")
    assert (before.policy, before.capacity, before.refill_tokens, before.refill_period_seconds) == (
        "SYNC_VERIFICATIONS_WRITE",
        50,
        10,
        60,
    )
    again = await client.get_rate_limit_bucket(participant, "VerifySync")
    assert again.available_tokens == before.available_tokens  # reading spends nothing
    await client.verify_sync(participant, KEY_TYPE, "0" * 64)
    after = await client.get_rate_limit_bucket(participant, "VerifySync")
    assert after.available_tokens == before.available_tokens - 1
    files = await client.get_rate_limit_bucket(participant, "CreateCidSetFile")
    assert (files.policy, files.refill_tokens, files.refill_period_seconds) == ("CIDS_FILES_WRITE", 40, 86_400)
    with pytest.raises(InvalidArgument, match="operation"):
        await client.get_rate_limit_bucket(participant, "DropEverything")
