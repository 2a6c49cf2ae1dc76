"""The 24-hour idempotency key of CID file requests, on a real Redis (and Redis Cluster) shared by several
replicas."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from cidsync.dict_api.file_requests import FileRequestPending, FileRequests
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput
from cidsync.redis_client import redis_client
from tests.helpers.servers import RedisServer


class Dict:
    """DICT's createCidSetFile as the replicas see it: each call spends a file."""

    def __init__(self, delay: float = 0.0, fail: int = 0) -> None:
        self.files = 0
        self.delay = delay
        self.fail = fail

    async def create(self) -> int:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("DICT did not answer")
        self.files += 1
        return 1000 + self.files


@pytest.fixture
async def replicas(store_url: str) -> AsyncIterator[list[FileRequests]]:
    """Four replicas' views of one store: a Redis, then a Redis Cluster."""
    clients = [redis_client(store_url) for _ in range(4)]
    prefix = f"t{uuid.uuid4().hex[:8]}"
    try:
        yield [FileRequests(c, prefix=prefix, wait=timedelta(seconds=5)) for c in clients]
    finally:
        for client in clients:
            await client.aclose()


async def test_a_repeated_request_gets_the_first_file_and_spends_no_second(replicas: list[FileRequests]) -> None:
    dict_, first, second = Dict(), replicas[0], replicas[1]
    made = await first.file_for("60701190", KeyType.EVP, "req-1", dict_.create)
    again = await second.file_for("60701190", KeyType.EVP, "req-1", dict_.create)
    assert (made, again, dict_.files) == (1001, 1001, 1)
    ttl = await first.redis.ttl(first.key("60701190", "req-1"))
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_replicas_asking_at_once_spend_one_file(replicas: list[FileRequests]) -> None:
    dict_ = Dict(delay=0.3)
    ids = await asyncio.gather(*(r.file_for("60701190", KeyType.CPF, "req-2", dict_.create) for r in replicas))
    assert (set(ids), dict_.files) == ({1001}, 1)


async def test_a_failed_call_releases_the_request_so_a_retry_asks_dict_again(replicas: list[FileRequests]) -> None:
    dict_ = Dict(fail=1)
    with pytest.raises(ConnectionError):
        await replicas[0].file_for("60701190", KeyType.PHONE, "req-3", dict_.create)
    assert await replicas[1].file_for("60701190", KeyType.PHONE, "req-3", dict_.create) == 1001
    assert dict_.files == 1


async def test_a_request_id_used_for_another_key_type_is_refused(replicas: list[FileRequests]) -> None:
    dict_ = Dict()
    await replicas[0].file_for("60701190", KeyType.EMAIL, "req-4", dict_.create)
    with pytest.raises(InvalidInput, match="was used for a EMAIL file"):
        await replicas[1].file_for("60701190", KeyType.CNPJ, "req-4", dict_.create)


async def test_a_claim_left_by_a_replica_that_stopped_is_taken_over(replicas: list[FileRequests]) -> None:
    requests = replicas[0]
    key = requests.key("60701190", "req-5")
    stale = {"token": "gone", "key_type": "EVP", "file_id": None, "claimed_at": time.time() - 3600}
    await requests.redis.set(key, json.dumps(stale), ex=3600)
    dict_ = Dict()
    assert await requests.file_for("60701190", KeyType.EVP, "req-5", dict_.create) == 1001
    assert dict_.files == 1


async def test_a_live_claim_not_recorded_in_time_is_pending_and_spends_nothing(redis_server: RedisServer) -> None:
    client = redis_client(redis_server.url)
    try:
        requests = FileRequests(client, prefix=f"t{uuid.uuid4().hex[:8]}", wait=timedelta(milliseconds=300))
        live = {"token": "busy", "key_type": "EVP", "file_id": None, "claimed_at": time.time()}
        await client.set(requests.key("60701190", "req-6"), json.dumps(live), ex=3600)
        dict_ = Dict()
        with pytest.raises(FileRequestPending):
            await requests.file_for("60701190", KeyType.EVP, "req-6", dict_.create)
        assert dict_.files == 0
    finally:
        await client.aclose()


async def test_no_request_id_no_idempotency(replicas: list[FileRequests]) -> None:
    dict_ = Dict()
    await replicas[0].file_for("60701190", KeyType.EVP, "", dict_.create)
    await replicas[0].file_for("60701190", KeyType.EVP, "", dict_.create)
    assert dict_.files == 2
