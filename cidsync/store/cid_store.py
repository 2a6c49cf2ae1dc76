"""`CIDStore`: the CID store over Redis, for every role (docs/design.md §3: the store is a library).

Built once per process with its Redis client injected (`cidsync.redis_client`): one Redis or a Redis
Cluster, the same calls for both. The starter checks marks,
the worker's activities apply changes, read and repair the store and keep a reconciliation's scratch sets,
and the CLI, the demo and the benches read it; none of them touches Redis beside it.

The client must not decode responses: the VSync is raw bytes.

On a Redis Cluster every pair's keys share one slot (the hash tag), so each script, MULTI and
multi-key command stays on one node; a pipeline over many pairs (a batch, the starter's marks) is split
by redis-py per node. A script is loaded on every primary before a pipeline uses it, and again after a
NOSCRIPT (a restarted primary starts with no scripts): every script is safe to run twice, so the batch is
simply sent again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cidsync.entry import KeyType
from cidsync.key_id import KeySecretMismatch, fingerprint, key_id
from cidsync.patience import until_answered
from cidsync.redis_client import RedisClient
from cidsync.store.ingestion import Ingestion
from cidsync.store.layout import DEFAULT_MARK_TTL_SECONDS, KEY_SECRET_CHECK, RECONCILIATION_TTL_SECONDS
from cidsync.store.layout_version import READABLE_LAYOUTS, StoreLayoutMismatch, accepted, record_or_read, refusal
from cidsync.store.outbox import Outbox
from cidsync.store.pair_view import PairView
from cidsync.store.reconciliation import ReconciliationScratch
from cidsync.store.replies import text
from cidsync.store.scripts import ScriptLoader


class CIDStore:
    """One Redis client and one key secret, and the store's parts by what they serve: `ingestion` (apply a
    change, the idempotency marks), `view` (the pair as it stands, verification records),
    `reconciliation` (the watch, DICT's file, the diff, the repair) and `outbox` (core's notifications),
    sharing one script loader."""

    def __init__(
        self,
        redis: RedisClient,
        key_secret: bytes,
        *,
        mark_ttl_seconds: int = DEFAULT_MARK_TTL_SECONDS,
        scratch_ttl_seconds: int = RECONCILIATION_TTL_SECONDS,
        readable_layouts: frozenset[int] = READABLE_LAYOUTS,
    ) -> None:
        self.redis = redis
        self.key_secret = key_secret
        self.readable_layouts = readable_layouts
        scripts = ScriptLoader(redis)
        self.ingestion = Ingestion(redis, scripts, mark_ttl_seconds, accepted(readable_layouts))
        self.view = PairView(redis)
        self.reconciliation = ReconciliationScratch(redis, scripts, scratch_ttl_seconds, accepted(readable_layouts))
        self.outbox = Outbox(redis)

    async def close(self) -> None:
        await self.redis.aclose()

    def key_id(self, key_type: KeyType, key: str) -> str:
        return key_id(self.key_secret, key_type, key)

    async def ping(self) -> None:
        """Readiness: Redis answers."""
        await self.redis.ping()

    async def check(self, *, wait: timedelta = timedelta(0), stop: asyncio.Event | None = None) -> None:
        """What every role checks before it works: the store's layout, then the key secret."""
        await self.check_layout(wait=wait, stop=stop)
        await self.check_key_secret(wait=wait, stop=stop)

    async def check_layout(self, *, wait: timedelta = timedelta(0), stop: asyncio.Event | None = None) -> None:
        """Refuse to go on if the store's layout is one this release does not read (recording it first on
        a store that has none): one line, with what was found, what is needed and what to run."""
        state = await until_answered(
            "Redis", lambda: record_or_read(self.redis), (RedisConnectionError, RedisTimeoutError), wait, stop=stop
        )
        why = refusal(state, self.readable_layouts)
        if why is not None:
            raise StoreLayoutMismatch(why)

    async def check_key_secret(self, *, wait: timedelta = timedelta(0), stop: asyncio.Event | None = None) -> None:
        """Record this secret's fingerprint on first use; refuse to go on if the store knows another.

        Every role calls this at start: a starter and a worker with different secrets would give one PIX
        key two key ids (two current CIDs, a wrong VSync), and nothing else would notice. A role may
        start while Redis is briefly away (a restart of the whole stack): it keeps asking for `wait`.
        """
        mine = fingerprint(self.key_secret)

        async def record_or_read() -> bytes | str | None:
            await self.redis.set(KEY_SECRET_CHECK, mine, nx=True)
            stored: bytes | str | None = await self.redis.get(KEY_SECRET_CHECK)
            return stored

        stored = await until_answered(
            "Redis", record_or_read, (RedisConnectionError, RedisTimeoutError), wait, stop=stop
        )
        if stored is not None and text(stored) != mine:
            raise KeySecretMismatch(
                f"CIDSYNC_KEY_SECRET differs from the one this store was built with (fingerprint "
                f"{text(stored)}, this process {mine}): every starter and worker must share one secret"
            )
