"""What only a Redis Cluster can get wrong: scripts a restarted primary has forgotten, commands
redis-py's cluster pipeline refuses by name, and keyspace notifications, which each node sends alone."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from cidsync.cid import vsync
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput
from cidsync.redis_client import cluster_nodes, redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys, RepairSide, Scratch
from cidsync.store.models import BatchResult
from cidsync_tooling.bench_store import applied_events
from tests.helpers.changes import change
from tests.helpers.servers import RedisClusterServers

SECRET = b"cluster-secret"


@pytest.fixture
async def store(redis_cluster: RedisClusterServers) -> AsyncIterator[CIDStore]:
    client = redis_client(redis_cluster.url)
    yield CIDStore(client, SECRET)
    await client.aclose()


def participants(count: int) -> list[str]:
    base = uuid.uuid4().int % 10**7
    return [f"{base:07d}{i}" for i in range(count)]


async def test_scripts_flushed_from_every_primary_are_loaded_again_once(store: CIDStore) -> None:
    """What a restarted primary looks like to the store (it has no scripts): a batch over pairs on every
    node and a single apply both go on, and the store stays exact."""
    owners = participants(6)
    first = [change(p, KeyType.EVP, f"key-{p}", 1, f"{i:064x}", secret=SECRET) for i, p in enumerate(owners)]
    assert (await store.ingestion.apply_batch(first)).applied == 6
    client = store.redis
    assert isinstance(client, RedisCluster)
    await client.script_flush()  # on every primary
    second = [change(p, KeyType.EVP, f"key-{p}", 2, f"{i + 100:064x}", secret=SECRET) for i, p in enumerate(owners)]
    results = await asyncio.gather(
        store.ingestion.apply_batch(second[:3]), *(store.ingestion.apply(c) for c in second[3:])
    )
    assert isinstance(results[0], BatchResult)
    # Sent again whole after the NOSCRIPT: what its first attempt applied on a node that had its
    # scripts again (a concurrent apply reloaded them) comes back a duplicate the second time.
    assert (results[0].applied + results[0].duplicate, results[0].stale) == (3, 0)
    for i, p in enumerate(owners):
        assert await store.view.cids(p, KeyType.EVP) == {f"{i + 100:064x}"}
        assert await store.view.vsync(p, KeyType.EVP) == vsync([f"{i + 100:064x}"])


async def test_the_diff_runs_inside_the_pairs_slot(store: CIDStore) -> None:
    (owner,) = participants(1)
    await store.ingestion.apply_batch(
        [change(owner, KeyType.CPF, f"k{i}", 1, f"{i:064x}", secret=SECRET) for i in (1, 2)]
    )
    scratch = Scratch(participant=owner, key_type=KeyType.CPF, run_id="diff")
    await store.reconciliation.add_file_page(scratch, [f"{2:064x}", f"{3:064x}"])
    diff = await store.reconciliation.diff(scratch)
    assert (diff.dict_only, diff.local_only) == (1, 1)
    assert await store.reconciliation.to_repair(scratch, RepairSide.DICT_ONLY, 10) == [f"{3:064x}"]
    assert await store.reconciliation.drop_scratch(scratch) == 3  # DICT's file and both sides of the diff


async def test_applied_events_are_announced_from_every_primary(store: CIDStore) -> None:
    client = store.redis
    assert isinstance(client, RedisCluster)
    await client.initialize()

    def port(participant: str) -> int | None:
        node = client.get_node_from_key(PairKeys(participant, KeyType.PHONE).cids)
        return None if node is None else int(node.port)

    # Nine random participants missed a node one time in 13 (that failed a run): drawn until three per node.
    by_port: dict[int | None, list[str]] = {}
    for candidate in {f"{uuid.uuid4().int % 10**8:08d}" for _ in range(200)}:
        by_port.setdefault(port(candidate), []).append(candidate)
    owners = [p for group in by_port.values() for p in group[:3]]
    assert len(by_port) == 3, "the pairs should spread over every node"
    assert len(owners) == 9
    changes = [change(p, KeyType.PHONE, f"key-{p}", 1, f"{i + 1:064x}", secret=SECRET) for i, p in enumerate(owners)]
    async with applied_events(store.redis) as announced:
        await store.ingestion.apply_batch(changes)
        seen: set[str] = set()
        async with asyncio.timeout(10):
            async for event_id in announced:
                seen.add(event_id)
                if len(seen) == len(changes):
                    break
    assert seen == {str(c.event_id) for c in changes}


def test_a_cluster_url_names_its_nodes() -> None:
    assert cluster_nodes("redis+cluster://a:7000,b:7001") == [("a", 7000), ("b", 7001)]
    assert cluster_nodes("rediss+cluster://user@a") == [("a", 6379)]
    for bad in ("redis+cluster://a:port", "redis+cluster://a:7000/1", "redis+cluster://:7000"):
        with pytest.raises(InvalidInput):
            cluster_nodes(bad)
