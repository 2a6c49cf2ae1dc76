"""The store's layout version: roles refuse a layout they do not read, and a migration moves a store on
while it is written, on one Redis and on a cluster.

Layout 2 here is a test's own: it renames each pair's `verified` hash to `proof`. The "release" that
reads 1 and 2 is a `CIDStore` built with `readable_layouts={1, 2}`, as the release carrying a real
migration would be (cidsync.store.layout_version: expand, migrate, contract)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from cidsync.cid import vsync
from cidsync.cli import run as cli
from cidsync.config import Settings
from cidsync.entry import KeyType
from cidsync.errors import CommandFailed
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import RedisClient, redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import LAYOUT_KEY, PairKeys
from cidsync.store.layout_version import (
    LayoutState,
    Migrator,
    PairLayoutChanged,
    StoreLayoutMismatch,
    read_state,
    record_or_read,
)
from cidsync.store.models import RepairStatus, VerificationRecord
from cidsync.topics import Topics
from starters.entry_events import EntryEventStarter
from starters.options import StarterConfig
from tests.helpers.changes import change
from tests.helpers.servers import PulsarBroker, RedisClusterServers, RedisServer
from workers.cid_worker import run_worker
from workers.options import WorkerOptions

SECRET = b"layout-secret"
DB = 9  # a database of its own on the shared Redis: the layout key is the whole store's
V1_AND_2 = frozenset({1, 2})

RENAME_VERIFIED = """
if (redis.call('GET', KEYS[3]) or '1') == '2' then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end
redis.call('SET', KEYS[3], '2')
return 1
"""


def proof_key(pair: PairKeys) -> str:
    return f"{pair.tag}:proof"


class RenameVerified:
    """The test's layout 2: one pair in one script on its slot, safe to run twice."""

    from_version = 1
    summary = "each pair's `verified` hash becomes `proof`"

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.moved = 0

    async def migrate_pair(self, redis: RedisClient, pair: PairKeys) -> bool:
        if self.fail_after is not None and self.moved >= self.fail_after:
            raise ConnectionError("the migration's connection dropped")
        moved = bool(await redis.eval(RENAME_VERIFIED, 3, pair.verified, proof_key(pair), pair.layout))
        self.moved += moved
        return moved


@pytest.fixture(params=["redis_server", "redis_cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    """An empty store: a database of its own on Redis; the cluster (one database) emptied before and after,
    which is safe because an xdist worker runs its tests one at a time."""
    servers: RedisServer | RedisClusterServers = request.getfixturevalue(request.param)
    url = f"redis://127.0.0.1:{servers.port}/{DB}" if isinstance(servers, RedisServer) else servers.url
    client = redis_client(url)
    await client.flushall() if isinstance(servers, RedisClusterServers) else await client.flushdb()
    yield client
    await client.flushall() if isinstance(servers, RedisClusterServers) else await client.flushdb()
    await client.aclose()


def owners(count: int) -> list[str]:
    base = uuid.uuid4().int % 10**6
    return [f"{base:06d}{i:02d}" for i in range(count)]


def record(participant: str) -> VerificationRecord:
    at = datetime(2026, 12, 5, 12, tzinfo=UTC)
    return VerificationRecord(
        participant=participant,
        key_type=KeyType.EVP,
        ok=True,
        at=at,
        verification_id="v-1",
        kind="formal",
        vsync="0" * 64,
    )


async def test_a_store_moves_to_the_next_layout_while_it_is_written(redis: RedisClient) -> None:
    old, new = CIDStore(redis, SECRET), CIDStore(redis, SECRET, readable_layouts=V1_AND_2)
    await old.check()
    assert await read_state(redis) == LayoutState(1)  # an empty store takes this release's layout
    pairs = owners(12)
    expected: dict[str, set[str]] = {p: set() for p in pairs}
    first = [
        change(p, KeyType.EVP, f"k{i}", 1, f"{n:064x}", secret=SECRET)
        for n, (p, i) in enumerate((p, i) for p in pairs for i in range(3))
    ]
    assert (await old.ingestion.apply_batch(first)).applied == len(first)
    for c in first:
        expected[c.participant].add(c.cid or "")
    for p in pairs:
        await old.view.record_verification(record(p))

    async def write_while_migrating() -> None:
        """The release reading 1 and 2 goes on ingesting: each write lands before its pair moves or after."""
        rng = random.Random(7)
        for n in range(200):
            p = rng.choice(pairs)
            cid = f"{1000 + n:064x}"
            await new.ingestion.apply(change(p, KeyType.EVP, f"new-{n}", 1, cid, secret=SECRET))
            expected[p].add(cid)
            await asyncio.sleep(0)

    migration = RenameVerified()
    report, _ = await asyncio.gather(Migrator(redis, {1: migration}, V1_AND_2).run(2), write_while_migrating())
    assert (report.before, report.after, report.moved) == (LayoutState(1), LayoutState(2), 12)
    for p in pairs:
        keys = PairKeys(p, KeyType.EVP)
        assert await redis.get(keys.layout) == b"2"
        assert not await redis.exists(keys.verified)
        assert (await redis.hgetall(proof_key(keys)))[b"ok_at"] == b"2026-12-05T12:00:00+00:00"
        assert await new.view.cids(p, KeyType.EVP) == expected[p]
        assert await new.view.vsync(p, KeyType.EVP) == vsync(sorted(expected[p]))

    with pytest.raises(StoreLayoutMismatch, match=r"layout version 2, newer than this release reads \(1\)"):
        await old.check()
    await new.check()
    # A role of the old release still running writes nothing to a moved pair: its activity would retry.
    moved_pair = PairKeys(pairs[0], KeyType.EVP)
    late = change(pairs[0], KeyType.EVP, "late", 1, f"{9999:064x}", secret=SECRET)
    with pytest.raises(PairLayoutChanged, match="layout version 2"):
        await old.ingestion.apply(late)
    with pytest.raises(PairLayoutChanged):
        await old.ingestion.apply_batch([late])
    with pytest.raises(PairLayoutChanged):
        await old.reconciliation.repair(moved_pair, late.key_id, "", f"{9999:064x}")
    assert await new.view.cids(pairs[0], KeyType.EVP) == expected[pairs[0]]
    assert await new.reconciliation.repair(moved_pair, late.key_id, "", f"{9999:064x}") == RepairStatus.REPAIRED

    again = await Migrator(redis, {1: RenameVerified()}, V1_AND_2).run(2)
    assert (again.after, again.moved, again.pairs) == (LayoutState(2), 0, 12)


async def test_an_interrupted_migration_goes_on_where_it_stopped(redis: RedisClient) -> None:
    store = CIDStore(redis, SECRET, readable_layouts=V1_AND_2)
    pairs = owners(6)
    await store.ingestion.apply_batch(
        [change(p, KeyType.EVP, "k", 1, f"{n + 1:064x}", secret=SECRET) for n, p in enumerate(pairs)]
    )
    with pytest.raises(ConnectionError):
        await Migrator(redis, {1: RenameVerified(fail_after=2)}, V1_AND_2).run(2)
    assert await read_state(redis) == LayoutState(1, migrating_to=2)
    with pytest.raises(StoreLayoutMismatch, match="being migrated from layout version 1 to 2; this release reads 1"):
        await CIDStore(redis, SECRET).check_layout()
    await store.check_layout()  # a release that reads both may start mid-migration
    report = await Migrator(redis, {1: RenameVerified()}, V1_AND_2).run(2)
    assert (report.after, report.moved) == (LayoutState(2), 4)
    assert [await redis.get(PairKeys(p, KeyType.EVP).layout) for p in pairs] == [b"2"] * 6


async def test_a_release_refuses_a_layout_older_than_it_reads_and_names_the_command(redis_server: RedisServer) -> None:
    redis = redis_client(f"redis://127.0.0.1:{redis_server.port}/{DB}")
    try:
        await redis.flushdb()
        await redis.hset(LAYOUT_KEY, "version", "1")
        with pytest.raises(StoreLayoutMismatch) as refused:
            await CIDStore(redis, SECRET, readable_layouts=frozenset({2})).check()
        assert str(refused.value) == (
            "the store is at layout version 1; this release reads layout version 2: migrate it first with "
            "`cidsync store migrate --to 2`"
        )
        with pytest.raises(CommandFailed, match="one version at a time"):
            await Migrator(redis, {2: RenameVerified()}, frozenset({3})).run(3)
        with pytest.raises(CommandFailed, match="carries no migration from layout version 1 to 2"):
            await Migrator(redis, {}, V1_AND_2).run(2)
    finally:
        await redis.flushdb()
        await redis.aclose()


async def test_a_store_written_before_versions_is_layout_1(redis_server: RedisServer) -> None:
    redis = redis_client(f"redis://127.0.0.1:{redis_server.port}/{DB}")
    try:
        await redis.flushdb()
        await CIDStore(redis, SECRET).ingestion.apply(change("12345678", KeyType.CPF, "k", 1, "a" * 64, secret=SECRET))
        assert await read_state(redis) is None
        assert await record_or_read(redis) == LayoutState(1)
    finally:
        await redis.flushdb()
        await redis.aclose()


def test_the_cli_shows_the_layout_and_refuses_a_migration_this_release_lacks(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    asyncio.run(_flush(url))
    try:
        assert cli(["store", "migrate", "--to", "1", "--redis-url", url]) == 0
        assert "layout version 1 -> layout version 1; 0 pairs moved" in capsys.readouterr().out
        assert cli(["store", "layout", "--redis-url", url]) == 0
        assert "store: layout version 1\n" in capsys.readouterr().out
        assert cli(["store", "migrate", "--to", "2", "--redis-url", url]) == 1
        assert capsys.readouterr().err == (
            "cidsync: this release reads layout version 1, not 2: migrate with a release that reads it\n"
        )
        asyncio.run(_set_version(url, 2))
        assert cli(["store", "layout", "--redis-url", url]) == 1
        assert (
            "roles of this release refuse to start: the store is at layout version 2, newer" in capsys.readouterr().out
        )
    finally:
        asyncio.run(_flush(url))


async def _flush(url: str) -> None:
    redis = redis_client(url)
    await redis.flushdb()
    await redis.aclose()


async def _set_version(url: str, version: int) -> None:
    redis = redis_client(url)
    await redis.hset(LAYOUT_KEY, "version", str(version))
    await redis.aclose()


async def test_the_worker_and_the_starter_refuse_a_layout_their_release_does_not_read(
    temporal_env: WorkflowEnvironment, redis_server: RedisServer, pulsar_broker: PulsarBroker
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    await _flush(url)
    await _set_version(url, 2)
    settings = Settings(
        redis_url=url, pulsar_url=pulsar_broker.url, bridge_address="127.0.0.1:1", key_secret=SECRET.decode()
    )
    redis = redis_client(url)
    pulsar = pulsar_client(pulsar_broker.url)
    starter = EntryEventStarter(temporal_env.client, CIDStore(redis, SECRET), pulsar, Topics(), StarterConfig())
    refusal = r"^the store is at layout version 2, newer than this release reads \(1\): a newer cidsync migrated it"
    try:
        with pytest.raises(StoreLayoutMismatch, match=refusal):
            await run_worker(temporal_env.client, settings, WorkerOptions(), asyncio.Event())
        with pytest.raises(StoreLayoutMismatch, match=refusal):
            await starter.run(asyncio.Event(), connect_wait=timedelta(0))
    finally:
        await pulsar.close()
        await redis.aclose()
        await _flush(url)
