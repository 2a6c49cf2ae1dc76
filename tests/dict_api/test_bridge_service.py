"""`bridge serve`'s service (the Bridge contract over DICT API v2) between the worker's own Bridge client
and the simulator's DICT API face, over real gRPC and real mutual TLS: each call of the contract, the file
request's idempotency in Redis, CID files paged from the checked spool, and DICT's refusals as the
contract's status codes with no data."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from cidsync.bridge import errors
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDSetFile, FileStatus
from cidsync.bridge.v2 import bridge_pb2_grpc
from cidsync.cid import vsync
from cidsync.dict_api.bridge_service import DictApiBridge, FileSpool
from cidsync.dict_api.client import DictApiClient
from cidsync.dict_api.file_requests import FileRequests
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from cidsync_tooling.devstack.pki import DictPki
from cidsync_tooling.devstack.processes import free_port
from cidsync_tooling.simulator.dict_api_face import DictApiFace
from cidsync_tooling.simulator.dict_state import SimulatedDict
from cidsync_tooling.simulator.server import Simulator
from tests.helpers.dict_api import PARTICIPANT, connector_config, load
from tests.helpers.servers import RedisServer


@pytest.fixture
async def bridge(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace], redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[BridgeClient]:
    _, face = dict_api
    redis = redis_client(redis_server.url)
    connector = DictApiClient(connector_config(pki, face))
    server = grpc.aio.server()
    service = DictApiBridge(
        connector, FileRequests(redis, prefix=f"t{uuid.uuid4().hex[:8]}"), FileSpool(connector, tmp_path)
    )
    bridge_pb2_grpc.add_DictBridgeServicer_to_server(service, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    client = BridgeClient(f"127.0.0.1:{port}", retry_attempts=1)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(None)
        await connector.close()
        await redis.aclose()


async def available(bridge: BridgeClient, file: CIDSetFile) -> CIDSetFile:
    for _ in range(200):
        if file.status.final:
            return file
        await asyncio.sleep(0.05)
        file = await bridge.get_cid_set_file(file.participant, file.file_id)
    raise AssertionError(f"the file stayed {file.status}")


async def test_verify_sync_and_a_cid_file_requested_once_paged_and_checked_end_to_end(
    bridge: BridgeClient, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    sim, _ = dict_api
    cids = load(sim, KeyType.EVP, 2_345)
    assert (await bridge.verify_sync(PARTICIPANT, KeyType.EVP, vsync(cids))).ok
    assert not (await bridge.verify_sync(PARTICIPANT, KeyType.EVP, vsync(cids[1:]))).ok

    first = await bridge.create_cid_set_file(PARTICIPANT, KeyType.EVP, request_id="round-1")
    again = await bridge.create_cid_set_file(PARTICIPANT, KeyType.EVP, request_id="round-1")
    assert again.file_id == first.file_id  # the same key: DICT asked once
    assert sum(1 for f in sim.dict.files.values() if f.participant == PARTICIPANT) == 1
    file = await available(bridge, first)
    assert file.status is FileStatus.AVAILABLE
    assert file.created_at is not None
    asked = sim.calls["GetCidSetFile"]
    streamed = [c async for page in bridge.cid_pages(PARTICIPANT, file.file_id, page_size=1_000) for c in page.cids]
    assert sorted(streamed) == sorted(cids)
    text = "".join(c + "\n" for c in streamed).encode()
    assert (file.cid_count, file.byte_size, file.sha256) == (len(cids), len(text), hashlib.sha256(text).hexdigest())
    page = await bridge.get_cid_page(PARTICIPANT, file.file_id, page_size=1_000)
    rest = [c async for p in bridge.cid_pages(PARTICIPANT, file.file_id, page.next_page_token, 1_000) for c in p.cids]
    assert page.cids + rest == streamed  # resumed exactly after the page
    # The file was downloaded when the Bridge first saw it AVAILABLE: no page asked DICT again.
    assert sim.calls["GetCidSetFile"] == asked


async def test_an_empty_pairs_file_is_served_empty(bridge: BridgeClient) -> None:
    file = await available(bridge, await bridge.create_cid_set_file(PARTICIPANT, KeyType.CNPJ))
    assert (file.status, file.cid_count, file.byte_size) == (FileStatus.AVAILABLE, 0, 0)
    assert file.sha256 == hashlib.sha256(b"").hexdigest()
    assert [c async for page in bridge.cid_pages(PARTICIPANT, file.file_id) for c in page.cids] == []


async def test_the_spool_forgets_old_files_when_it_takes_a_new_one(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace], tmp_path: Path
) -> None:
    sim, face = dict_api
    load(sim, KeyType.EVP, 10)
    async with DictApiClient(connector_config(pki, face)) as connector:
        spool = FileSpool(connector, tmp_path, keep=3600)
        old = tmp_path / f"{PARTICIPANT}-999.cids"
        old.write_text("0" * 64 + "\n")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        assert await spool.kept(PARTICIPANT, 999) is not None  # still there until a new file comes
        info = await connector.create_cid_set_file(PARTICIPANT, KeyType.EVP)
        for _ in range(200):
            if (info := await connector.get_cid_set_file(PARTICIPANT, info.id)).status is FileStatus.AVAILABLE:
                break
            await asyncio.sleep(0.05)
        spooled = await spool.ready(info)
        assert spooled.cids == 10
        assert not old.exists()
        assert await spool.kept(PARTICIPANT, info.id) == spooled
        assert await spool.kept("99999999", info.id) is None  # another participant never finds it


async def test_entries_events_and_buckets_pass_through_as_the_contract_says(
    bridge: BridgeClient, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    sim, _ = dict_api
    cids = load(sim, KeyType.PHONE, 5)
    found = await bridge.get_entry_by_cid(PARTICIPANT, cids[2])
    held = sim.dict.find(PARTICIPANT, cids[2])
    assert held is not None
    assert (found.cid, found.entry, found.request_id) == (cids[2], held.in_dict(), held.request_id)
    with pytest.raises(errors.NotFound):
        await bridge.get_entry_by_cid(PARTICIPANT, "0" * 64)

    start = SimulatedDict.now() - timedelta(minutes=5)
    events = await bridge.list_cid_set_events(PARTICIPANT, KeyType.PHONE, start, SimulatedDict.now(), 200)
    assert sorted(e.cid for e in events.events) == sorted(cids)

    bucket = await bridge.get_rate_limit_bucket(PARTICIPANT, "CreateCidSetFile")
    assert (bucket.policy, bucket.refill_tokens, bucket.refill_period_seconds) == ("CIDS_FILES_WRITE", 40, 86_400)


async def test_dicts_refusals_become_the_contracts_codes_and_never_data(
    bridge: BridgeClient, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    sim, face = dict_api
    cids = load(sim, KeyType.CPF, 3)
    face.tamper_next = 1
    with pytest.raises(errors.DataLoss, match="signature"):
        await bridge.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids))
    with pytest.raises(errors.NotFound):
        await bridge.get_cid_set_file(PARTICIPANT, "987654")
    with pytest.raises(errors.InvalidArgument, match="file_id"):
        await bridge.get_cid_set_file(PARTICIPANT, "not-a-number")
    sim.faults.fail_next["VerifySync"] = 1
    with pytest.raises(errors.Unavailable):
        await bridge.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids))
    sim.participants = frozenset({"11111111"})
    with pytest.raises(errors.PermissionDenied):
        await bridge.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids))
    sim.participants = frozenset()
    left = (await bridge.get_rate_limit_bucket(PARTICIPANT, "VerifySync")).available_tokens
    for _ in range(left):  # SYNC_VERIFICATIONS_WRITE: spend what the bucket holds
        await bridge.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids))
    with pytest.raises(errors.RateLimited) as limited:
        await bridge.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids))
    assert limited.value.retry_after == pytest.approx(6.0, abs=0.01)  # from the bucket: 10 a minute
