"""The store's layout version: what every role checks at start, and how a migration moves a store on.

The keys `cidsync.store.layout` describes are layout version 1. The version lives in Redis
(`cidsync:layout`), so a role of a release that does not know the store's layout refuses to start, with one
line saying what it found, what it needs and what to run, instead of reading keys it misunderstands.

A layout change ships as expand, migrate, contract (docs/development.md, "Changing the store's layout"):
release N+1 reads and writes layouts N and N+1 (`READABLE_LAYOUTS`) and carries the `Migration` from N;
once the old release has drained, `cidsync store migrate --to N+1` moves the pairs one by one while the
roles run (each pair in one atomic step, on its own slot); release N+2 drops layout N. Each pair carries
its own version (`PairKeys.layout`, absent for 1), and every write script refuses a pair whose layout its
writer does not know (`PairLayoutChanged`): a role of a release older than a migration, still running by
mistake, leaves the pair alone instead of writing it in a layout no one reads, and its activity retries.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cidsync.errors import CommandFailed
from cidsync.redis_client import RedisClient
from cidsync.store.layout import LAYOUT_KEY, PAIR_PATTERNS, PairKeys
from cidsync.store.replies import text

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1  # the layout this release migrates to and creates: `cidsync.store.layout` describes it
READABLE_LAYOUTS = frozenset({LAYOUT_VERSION})  # the layouts this release's roles read and write


class StoreLayoutMismatch(CommandFailed):
    """The store's layout is one this release does not read: the role must not start (the CLI prints the
    reason on one line and exits 1)."""


class PairLayoutChanged(RuntimeError):
    """A write reached a pair that a migration moved to a layout this writer does not know; nothing was
    written. Raised inside an activity it fails the attempt, which Temporal retries."""


@dataclass(frozen=True)
class LayoutState:
    version: int
    migrating_to: int | None = None

    def __str__(self) -> str:
        moving = f", being migrated to {self.migrating_to}" if self.migrating_to is not None else ""
        return f"layout version {self.version}{moving}"


def accepted(readable: Iterable[int]) -> str:
    """The write scripts' argument naming the layouts a writer knows: ",1," or ",1,2,"."""
    return "," + ",".join(str(version) for version in sorted(readable)) + ","


async def read_state(redis: RedisClient) -> LayoutState | None:
    """The store's layout, or None when no role has recorded one yet."""
    fields = {text(k): text(v) for k, v in (await redis.hgetall(LAYOUT_KEY)).items()}
    if "version" not in fields:
        return None
    moving = fields.get("migrating_to")
    return LayoutState(int(fields["version"]), int(moving) if moving else None)


async def record_or_read(redis: RedisClient) -> LayoutState:
    """The store's layout, recorded first if none is: a store with no pair yet takes this release's
    layout; one with pairs but no version was written before versions existed, which is layout 1."""
    state = await read_state(redis)
    if state is not None:
        return state
    version = LAYOUT_VERSION if not await _any_pair(redis) else 1
    await redis.hsetnx(LAYOUT_KEY, "version", str(version))  # a concurrent role may have recorded it first
    recorded = await read_state(redis)
    assert recorded is not None
    return recorded


def _spelled(readable: Iterable[int]) -> str:
    return " and ".join(str(version) for version in sorted(readable))


def refusal(state: LayoutState, readable: frozenset[int] = READABLE_LAYOUTS) -> str | None:
    """Why a role of a release that reads `readable` must not start on a store at `state`; None if it may."""
    reads = _spelled(readable)
    if state.version not in readable:
        if state.version > max(readable):
            return (
                f"the store is at layout version {state.version}, newer than this release reads ({reads}): a "
                f"newer cidsync migrated it; run that release or a later one"
            )
        return (
            f"the store is at layout version {state.version}; this release reads layout version {reads}: "
            f"migrate it first with `cidsync store migrate --to {min(v for v in readable if v > state.version)}`"
        )
    if state.migrating_to is not None and state.migrating_to not in readable:
        return (
            f"the store is being migrated from layout version {state.version} to {state.migrating_to}; this "
            f"release reads {reads}: run a release that reads layout version {state.migrating_to}"
        )
    return None


class Migration(Protocol):
    """One step of the layout, from `from_version` to `from_version + 1`.

    `migrate_pair` moves one pair in one atomic step (a script on the pair's slot) and sets the pair's
    `layout` key in the same step; it must be safe to run twice and on a pair already moved."""

    from_version: int
    summary: str

    async def migrate_pair(self, redis: RedisClient, pair: PairKeys) -> bool:
        """Move the pair; False when it had already been moved."""
        ...


# Every migration this release carries, by the version it starts from. Layout 1 is the first: none yet.
MIGRATIONS: Mapping[int, Migration] = {}


@dataclass(frozen=True)
class MigrationReport:
    before: LayoutState
    after: LayoutState
    pairs: int  # pairs looked at in the last pass
    moved: int  # pairs this run moved


async def pairs_in(redis: RedisClient) -> AsyncIterator[PairKeys]:
    """Every pair with a state (a VSync or a key's sequence), each once; on a cluster, from every primary."""
    seen: set[PairKeys] = set()
    for pattern in PAIR_PATTERNS:
        async for name in redis.scan_iter(match=pattern, count=1000):
            pair = PairKeys.of_key(text(name))
            if pair not in seen:
                seen.add(pair)
                yield pair


async def _any_pair(redis: RedisClient) -> bool:
    async for _ in pairs_in(redis):
        return True
    return False


class Migrator:
    """Moves a store to the next layout while the roles run: `cidsync store migrate --to N`."""

    def __init__(
        self,
        redis: RedisClient,
        migrations: Mapping[int, Migration] = MIGRATIONS,
        readable: frozenset[int] = READABLE_LAYOUTS,
    ) -> None:
        self.redis = redis
        self.migrations = migrations
        self.readable = readable

    async def run(self, to: int, progress: Callable[[int, int], None] | None = None) -> MigrationReport:
        """Move every pair to layout `to`, then record the store at `to`. Interrupted, it is run again
        and goes on where it was; run when the store is already at `to`, it moves any pair left behind.

        Pairs are moved in passes until a pass finds none to move, so a pair that a writer created
        during a pass is not left behind. `progress(looked_at, moved)` is called every 1,000 pairs."""
        before = await record_or_read(self.redis)
        if before == LayoutState(to) and to - 1 not in self.migrations and to in self.readable:
            return MigrationReport(before=before, after=before, pairs=0, moved=0)  # nothing ever led here
        migration = self._migration_to(before, to)
        if before.version == to - 1:
            await self.redis.hset(LAYOUT_KEY, "migrating_to", str(to))
            logger.info("migrating the store from layout version %d to %d: %s", to - 1, to, migration.summary)
        moved_in_all = 0
        while True:
            looked_at, moved = await self._pass(migration, progress)
            moved_in_all += moved
            if moved == 0:
                break
        await self.redis.hset(LAYOUT_KEY, mapping={"version": str(to)})
        await self.redis.hdel(LAYOUT_KEY, "migrating_to")
        after = await read_state(self.redis)
        assert after is not None
        return MigrationReport(before=before, after=after, pairs=looked_at, moved=moved_in_all)

    def _migration_to(self, state: LayoutState, to: int) -> Migration:
        if to not in self.readable:
            raise CommandFailed(
                f"this release reads layout version {_spelled(self.readable)}, not {to}: "
                f"migrate with a release that reads it"
            )
        if state.migrating_to is not None and state.migrating_to != to:
            raise CommandFailed(f"the store is being migrated to layout version {state.migrating_to}, not {to}")
        if state.version not in (to - 1, to):
            raise CommandFailed(
                f"the store is at layout version {state.version}: migrations go one version at a time "
                f"(to {state.version + 1} next)"
            )
        migration = self.migrations.get(to - 1)
        if migration is None:
            raise CommandFailed(f"this release carries no migration from layout version {to - 1} to {to}")
        return migration

    async def _pass(self, migration: Migration, progress: Callable[[int, int], None] | None) -> tuple[int, int]:
        looked_at = moved = 0
        async for pair in pairs_in(self.redis):
            looked_at += 1
            moved += await migration.migrate_pair(self.redis, pair)
            if progress is not None and looked_at % 1000 == 0:
                progress(looked_at, moved)
        return looked_at, moved
