"""Streaming a DICT CID file into Redis (resumable, checked) and the server-side diff."""

import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.cid_file import CIDFileActivities, StreamFileInput
from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDSetFile
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys, Scratch
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.synthetic import synthetic_entry
from tests.bridge.test_contract import wait_available
from tests.helpers.servers import BridgeSimulator, RedisServer

COUNT = 5_000


class Crash(Exception):
    """Stands for the worker dying mid-stream."""


@pytest.fixture
async def activities(redis_server: RedisServer, bridge_simulator: BridgeSimulator) -> AsyncIterator[CIDFileActivities]:
    store = CIDStore(redis_client(redis_server.url), b"cid-file-secret")
    async with BridgeClient(bridge_simulator.address) as bridge:
        yield CIDFileActivities(store, bridge)
    await store.close()


async def dict_file(bridge_simulator: BridgeSimulator, participant: str) -> tuple[CIDSetFile, list[str]]:
    rng = random.Random(participant)
    async with SimulatorAdmin(bridge_simulator.address) as admin:
        cids = await admin.load(synthetic_entry(rng, participant, KeyType.EVP) for _ in range(COUNT))
    async with BridgeClient(bridge_simulator.address) as bridge:
        file = await wait_available(bridge, await bridge.create_cid_set_file(participant, KeyType.EVP))
    return file, cids


def request(file: CIDSetFile, participant: str, **changes: Any) -> StreamFileInput:
    scratch = Scratch(participant=participant, key_type=KeyType.EVP, run_id="run-1")
    return StreamFileInput(
        scratch=scratch, file_id=file.file_id, cid_count=file.cid_count, sha256=file.sha256
    ).model_copy(update=changes)


async def test_streams_the_whole_file_into_the_scratch_set(
    activities: CIDFileActivities, bridge_simulator: BridgeSimulator, participant: str
) -> None:
    file, cids = await dict_file(bridge_simulator, participant)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    result = await env.run(activities.stream_cid_file, request(file, participant))
    assert (result.cids, result.resumed) == (COUNT, False)
    stored = await activities.store.redis.smembers(request(file, participant).scratch.dict_cids)
    assert stored == {c.encode() for c in cids}
    assert beats[-1] == ("store", "", COUNT)
    assert len(beats) == COUNT // 1_000  # one heartbeat a page, carrying the cursor


async def test_a_crash_mid_stream_resumes_from_the_last_heartbeat(
    activities: CIDFileActivities, bridge_simulator: BridgeSimulator, participant: str
) -> None:
    file, cids = await dict_file(bridge_simulator, participant)
    first = ActivityEnvironment()
    beats: list[Any] = []

    def crash_after_two_pages(*details: Any) -> None:
        beats.append(details)
        if len(beats) == 2:
            raise Crash

    first.on_heartbeat = crash_after_two_pages
    with pytest.raises(Crash):
        await first.run(activities.stream_cid_file, request(file, participant))
    assert beats[-1][0] == "store"
    assert beats[-1][2] == 2_000
    assert beats[-1][1]  # a page token to resume from

    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=list(beats[-1]), attempt=2)
    resumed_beats: list[Any] = []
    retry.on_heartbeat = lambda *details: resumed_beats.append(details)
    result = await retry.run(activities.stream_cid_file, request(file, participant))
    assert (result.cids, result.resumed) == (COUNT, True)
    stored_pages = [b for b in resumed_beats if b[0] == "store"]
    assert len(stored_pages) == 3  # the three pages not stored before the crash, and no others
    stored = await activities.store.redis.smembers(request(file, participant).scratch.dict_cids)
    assert stored == {c.encode() for c in cids}


async def test_a_file_that_does_not_match_its_announcement_fails_without_retrying(
    activities: CIDFileActivities, bridge_simulator: BridgeSimulator, participant: str
) -> None:
    file, _ = await dict_file(bridge_simulator, participant)
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(activities.stream_cid_file, request(file, participant, sha256="0" * 64))
    assert failed.value.type == "CidFileMismatch"
    assert failed.value.non_retryable
    assert "SHA-256" in str(failed.value)


async def test_diff_counts_both_sides_and_drop_cleans_up(activities: CIDFileActivities, participant: str) -> None:
    scratch = Scratch(participant=participant, key_type=KeyType.CPF, run_id="r")
    local = PairKeys(participant, KeyType.CPF).cids
    await activities.store.redis.sadd(scratch.dict_cids, "a" * 64, "b" * 64, "c" * 64)
    await activities.store.redis.sadd(local, "b" * 64, "c" * 64, "d" * 64, "e" * 64)
    result = await ActivityEnvironment().run(activities.diff, scratch)
    assert (result.dict_only, result.local_only) == (1, 2)
    assert await activities.store.redis.smembers(scratch.dict_only) == {b"a" * 64}
    assert await activities.store.redis.smembers(scratch.local_only) == {b"d" * 64, b"e" * 64}
    assert 0 < await activities.store.redis.ttl(scratch.dict_only) <= 3 * 86_400
    assert await ActivityEnvironment().run(activities.drop_scratch, scratch) == 3
    assert await activities.store.redis.smembers(local) == {b"b" * 64, b"c" * 64, b"d" * 64, b"e" * 64}
