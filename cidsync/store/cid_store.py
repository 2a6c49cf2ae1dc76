"""`CIDStore`: the CID store's API over Redis, for every role (docs/design.md §3: the store is a library).

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
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, cast

from opentelemetry.trace import SpanKind
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from cidsync.anchor import EPOCH, Verdict, judge
from cidsync.bridge.models import CidEventType, CidSetEvent
from cidsync.cid import ZERO_VSYNC
from cidsync.entry import KeyType
from cidsync.patience import until_answered
from cidsync.redis_client import RedisClient
from cidsync.store.key_id import KeySecretMismatch, fingerprint, key_id
from cidsync.store.layout import (
    DEFAULT_MARK_TTL_SECONDS,
    KEY_SECRET_CHECK,
    MARK_PATTERN,
    RECONCILIATION_TTL_SECONDS,
    SEQUENCE_DIGITS,
    VSYNC_PATTERN,
    PairKeys,
    RepairSide,
    Scratch,
)
from cidsync.store.models import (
    ApplyResult,
    ApplyStatus,
    BatchResult,
    CIDChange,
    CidHolder,
    DiffResult,
    JudgedDiff,
    LocalView,
    LocalVSync,
    PairVerification,
    RepairStatus,
    VerificationRecord,
)
from cidsync.store.scripts import APPLY, REPAIR
from cidsync.telemetry import tracing

_REDIS_SCRIPT = {"db.system.name": "redis", "db.operation.name": "EVALSHA"}


def _apply_attributes(change: CIDChange) -> dict[str, str | int]:
    """A span about one apply: ids, the key id and the pair; no key, no CID (docs/design.md §5)."""
    return {**_REDIS_SCRIPT, "cidsync.event_id": str(change.event_id), "cidsync.participant": change.participant,
            "cidsync.key_type": change.key_type.value, "cidsync.key_id": change.key_id,
            "cidsync.sequence": change.sequence}  # fmt: skip


def _vsync_hex(raw: bytes | str | None) -> str:
    # The store's client never decodes responses (the VSync is raw bytes); str only satisfies typing.
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    return raw.hex().rjust(64, "0") if raw else ZERO_VSYNC


def _millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CIDStore:
    def __init__(
        self,
        redis: RedisClient,
        key_secret: bytes,
        *,
        mark_ttl_seconds: int = DEFAULT_MARK_TTL_SECONDS,
        scratch_ttl_seconds: int = RECONCILIATION_TTL_SECONDS,
    ) -> None:
        self.redis = redis
        self.key_secret = key_secret
        self.mark_ttl_seconds = mark_ttl_seconds
        self.scratch_ttl_seconds = scratch_ttl_seconds
        self._scripts = {name: (text, hashlib.sha1(text.encode()).hexdigest()) for name, text in
                         (("apply", APPLY), ("repair", REPAIR))}  # fmt: skip
        self._loaded = 0  # how many times the scripts were loaded: 0, not yet
        self._loading = asyncio.Lock()

    async def close(self) -> None:
        await self.redis.aclose()

    def key_id(self, key_type: KeyType, key: str) -> str:
        return key_id(self.key_secret, key_type, key)

    async def ping(self) -> None:
        """Readiness: Redis answers."""
        await self.redis.ping()

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

        stored = await until_answered("Redis", record_or_read, (RedisConnectionError, RedisTimeoutError), wait,
                                      stop=stop)  # fmt: skip
        if stored is not None and _text(stored) != mine:
            raise KeySecretMismatch(
                f"CIDSYNC_KEY_SECRET differs from the one this store was built with (fingerprint "
                f"{_text(stored)}, this process {mine}): every starter and worker must share one secret"
            )

    # --- ingestion ---------------------------------------------------------------------------------------

    def _script_call(self, change: CIDChange) -> tuple[list[str], list[str | int]]:
        pair = PairKeys(change.participant, change.key_type)
        keys = [
            pair.cids, pair.vsync, pair.states, pair.scratch, pair.mark(str(change.event_id)), pair.by_cid,
            pair.touched, pair.journal,
        ]  # fmt: skip
        args: list[str | int] = [
            change.key_id,
            str(change.sequence).zfill(SEQUENCE_DIGITS),
            change.cid or "",
            self.mark_ttl_seconds,
            str(change.entry_id),
        ]
        return keys, args

    async def apply(self, change: CIDChange) -> ApplyResult:
        keys, args = self._script_call(change)
        with tracing.span("redis apply", kind=SpanKind.CLIENT, attributes=_apply_attributes(change)) as span:
            status, previous, _, raw_vsync = await self._run_script("apply", keys, args)
            if span is not None:
                span.set_attribute("cidsync.outcome", _text(status))
        return ApplyResult(
            status=ApplyStatus(_text(status)),
            previous_sequence=int(previous) if previous else None,
            vsync=_vsync_hex(raw_vsync),
        )

    async def apply_batch(self, changes: Iterable[CIDChange]) -> BatchResult:
        """Each change is still its own atomic, versioned apply; the pipeline only saves round trips.

        So how events are grouped into batches (and regrouped on redelivery) cannot change the result.
        """
        calls = [self._script_call(change) for change in changes]
        with tracing.span("redis apply batch", kind=SpanKind.CLIENT, attributes=_REDIS_SCRIPT) as span:
            replies = await self._pipelined_applies(calls)
            applied = sum(1 for reply in replies if reply[0] == b"applied")
            if span is not None:
                span.set_attributes({"db.operation.batch.size": len(replies), "cidsync.applied": applied})
        return BatchResult(applied=applied, stale=len(replies) - applied)

    async def _pipelined_applies(self, calls: list[tuple[list[str], list[str | int]]]) -> list[list[bytes]]:
        """The apply script once per call, in one pipeline (per node, on a cluster); sent again whole
        after a NOSCRIPT (see `_run_script`): the changes it had applied then come back stale, so the
        count of applied ones is low and the store right."""
        sha = self._scripts["apply"][1]
        for attempt in (1, 2):
            loaded = await self._ensure_scripts()
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)  # routed by its keys
                    replies: list[list[bytes]] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._ensure_scripts(reload_after=loaded)
        raise AssertionError("unreachable")

    async def _run_script(self, name: str, keys: list[str], args: Sequence[str | int]) -> Any:
        """EVALSHA, the scripts loaded first, and loaded again once after a NOSCRIPT (a restarted Redis,
        or a primary of a cluster, starts with none).

        Not redis-py's `Script`: on a cluster its fallback has every caller that meets NOSCRIPT load
        the script on every primary at once, and concurrent callers then failed on half-open
        connections ("'NoneType' object has no attribute 'writelines'", redis-py 8.1, seen in the
        property tests); its pipelines ask SCRIPT EXISTS before every batch, and its cluster pipeline
        loads nothing. Here one caller loads, the others wait for it."""
        sha = self._scripts[name][1]
        loaded = await self._ensure_scripts()
        try:
            return await self.redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._ensure_scripts(reload_after=loaded)
            return await self.redis.evalsha(sha, len(keys), *keys, *args)

    async def _ensure_scripts(self, reload_after: int | None = None) -> int:
        """Load the scripts if they never were, or (`reload_after`) if no one has since that load; the
        load's number."""
        async with self._loading:
            if self._loaded == 0 or self._loaded == reload_after:
                for text, sha in self._scripts.values():
                    loaded = await self.redis.script_load(text)  # on every primary, on a cluster
                    if _text(loaded) != sha:
                        raise RuntimeError(f"Redis names the store's script {_text(loaded)}, not {sha}")
                self._loaded += 1
            return self._loaded

    @asynccontextmanager
    async def applied_events(self) -> AsyncIterator[AsyncIterator[str]]:
        """The event id of every idempotency mark set from entering on, as Redis announces it.

        How the benches see each event applied the moment it is, without polling. It turns on keyspace
        notifications for string commands (CONFIG SET) and costs every write a publish: not for production.
        """
        # A cluster's nodes each announce their own keys: every primary is told, and listened to.
        if isinstance(self.redis, RedisCluster):
            await self.redis.config_set("notify-keyspace-events", "K$", target_nodes=RedisCluster.PRIMARIES)
            pubsubs: list[Any] = [self.redis.pubsub(node=node) for node in self.redis.get_primaries()]
        else:
            await self.redis.config_set("notify-keyspace-events", "K$")
            pubsubs = [self.redis.pubsub()]
        for pubsub in pubsubs:
            await pubsub.psubscribe(f"__keyspace@*__:{MARK_PATTERN}")
        announced: asyncio.Queue[str] = asyncio.Queue()

        async def listen(pubsub: Any) -> None:
            async for message in pubsub.listen():
                if message["type"] == "pmessage":
                    announced.put_nowait(_text(message["channel"]).rsplit(":", 1)[1])

        async def event_ids() -> AsyncIterator[str]:
            while True:
                yield await announced.get()

        listeners = [asyncio.ensure_future(listen(pubsub)) for pubsub in pubsubs]
        try:
            yield event_ids()
        finally:
            for listener in listeners:
                listener.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
            for pubsub in pubsubs:
                await pubsub.aclose()

    async def marked(self, changes: Sequence[CIDChange]) -> list[bool]:
        """Whether each change's event is marked applied: one pipelined round trip for all of them."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for change in changes:
                pipe.exists(PairKeys(change.participant, change.key_type).mark(str(change.event_id)))
            return [bool(found) for found in await pipe.execute()]

    async def is_marked(self, participant: str, key_type: KeyType, event_id: str) -> bool:
        return bool(await self.redis.exists(PairKeys(participant, key_type).mark(event_id)))

    async def key_sequence(self, pair: PairKeys, key_id_: str) -> int | None:
        """The sequence last applied for a key (a delete included), or None if never seen."""
        state = await self.key_state(pair, key_id_)
        return int(state[:SEQUENCE_DIGITS]) if state else None

    async def key_state(self, pair: PairKeys, key_id_: str) -> str:
        """A key's raw state ("<sequence>|<cid>"), or "" when the store never saw it."""
        state = await self.redis.hget(pair.states, key_id_)
        return _text(state) if state else ""

    # --- reads ---------------------------------------------------------------------------------------

    async def local_vsync(self, pair: PairKeys) -> LocalVSync:
        view = await self.local_view(pair, [])  # both from the same instant
        return LocalVSync(vsync=view.vsync, count=view.count)

    async def local_view(self, pair: PairKeys, cids: Sequence[str], changes_since: datetime | None = None) -> LocalView:
        """Which of `cids` the pair's set holds, with its VSync and count, all from the same instant
        (one MULTI): what the event-log follower compares with DICT. With `changes_since`, also the set's
        changes journalled from then on (Redis's clock), oldest first: what a proof undoes."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if cids:
                pipe.smismember(pair.cids, list(cids))
            if changes_since is not None:
                pipe.xrange(pair.journal, min=f"{int(changes_since.timestamp() * 1000)}-0", max="+")
            pipe.get(pair.vsync)
            pipe.scard(pair.cids)
            found = await pipe.execute()
        members = [bool(m) for m in found[0]] if cids else []
        changes = [] if changes_since is None else [
            (_text(fields[b"c"]), fields[b"o"] == b"+") for _, fields in found[-3]
        ]  # fmt: skip
        raw, count = found[-2:]
        return LocalView(members=members, vsync=_vsync_hex(raw), count=int(count), changes=changes)

    async def vsync(self, participant: str, key_type: KeyType) -> str:
        return _vsync_hex(await self.redis.get(PairKeys(participant, key_type).vsync))

    async def count(self, participant: str, key_type: KeyType) -> int:
        return int(await self.redis.scard(PairKeys(participant, key_type).cids))

    async def cids(self, participant: str, key_type: KeyType) -> set[str]:
        return {_text(c) for c in await self.redis.smembers(PairKeys(participant, key_type).cids)}

    async def pairs(self) -> list[tuple[str, KeyType]]:
        """Every (participant, key type) with a VSync in the store, sorted."""
        found = set()
        async for name in self.redis.scan_iter(match=VSYNC_PATTERN, count=1000):
            pair = PairKeys.of_vsync_key(_text(name))
            found.add((pair.participant, pair.key_type))
        return sorted(found)

    # --- verification records (what the 36-hour freshness check reads) ---------------------------------

    async def record_verification(self, record: VerificationRecord) -> None:
        """The pair's last formal verification and its last OK; and its last proof of any kind, with how it
        was obtained (kind, VSync, log point)."""
        fields: dict[FieldT, EncodableT] = {}
        if record.kind == "formal":
            fields = {"result": "OK" if record.ok else "NOK", "at": record.at.isoformat(), "id": record.verification_id}
            if record.ok:
                fields["ok_at"] = record.at.isoformat()
        if record.ok:
            fields |= {"proof_at": record.at.isoformat(), "proof_kind": record.kind, "proof_vsync": record.vsync,
                       "proof_log_point": record.log_point.isoformat() if record.log_point else "",
                       "proof_id": record.verification_id}  # fmt: skip
        if fields:
            await self.redis.hset(PairKeys(record.participant, record.key_type).verified, mapping=fields)

    async def last_verifications(self, pairs: Sequence[PairKeys]) -> list[PairVerification]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pair in pairs:
                pipe.hgetall(pair.verified)
            found = await pipe.execute()
        result = []
        for pair, fields in zip(pairs, found, strict=True):
            text = {_text(k): _text(v) for k, v in fields.items()}
            result.append(
                PairVerification(
                    participant=pair.participant,
                    key_type=pair.key_type,
                    last_result=text.get("result"),
                    last_at=datetime.fromisoformat(text["at"]) if "at" in text else None,
                    last_ok_at=datetime.fromisoformat(text["ok_at"]) if "ok_at" in text else None,
                    last_proof_at=datetime.fromisoformat(text["proof_at"]) if "proof_at" in text else None,
                    last_proof_kind=text.get("proof_kind"),
                )
            )
        return result

    # --- reconciliation: the watch, DICT's CID file, the diff, the repair, the outbox -------------------

    async def begin_watch(self, pair: PairKeys, ttl_seconds: int) -> None:
        """From now on, every key an event changes is recorded in the pair's `touched` set.

        A reconciliation calls this before it requests the CID file: a key changed after that may be
        newer locally than in DICT's snapshot, so its repair is skipped (left to the next verification)
        instead of risking an older snapshot overwriting it. The sentinel member keeps the set alive
        while it is empty; the TTL ends a watch whose reconciliation never finished.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(pair.touched)
            pipe.sadd(pair.touched, "-")
            pipe.expire(pair.touched, ttl_seconds)
            await pipe.execute()

    async def end_watch(self, pair: PairKeys) -> None:
        await self.redis.delete(pair.touched)

    async def add_file_page(self, scratch: Scratch, cids: list[str]) -> None:
        """One page of DICT's CID file into the round's scratch set (adding a page twice is harmless)."""
        if not cids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(scratch.dict_cids, *cids)
            pipe.expire(scratch.dict_cids, self.scratch_ttl_seconds)
            await pipe.execute()

    async def file_cids(self, scratch: Scratch) -> int:
        """How many distinct CIDs of DICT's file the scratch set holds."""
        return int(await self.redis.scard(scratch.dict_cids))

    async def diff(self, scratch: Scratch) -> DiffResult:
        """DICT-only and local-only CIDs, computed inside Redis into the scratch sets; counts come back."""
        local = scratch.pair.cids
        async with self.redis.pipeline(transaction=False) as pipe:
            # redis-py's cluster pipeline refuses `sdiffstore` (and `evalsha`) by name, whatever the keys'
            # slots; these share the pair's, so the command itself is sent.
            pipe.execute_command("SDIFFSTORE", scratch.dict_only, scratch.dict_cids, local)
            pipe.execute_command("SDIFFSTORE", scratch.local_only, local, scratch.dict_cids)
            pipe.expire(scratch.dict_only, self.scratch_ttl_seconds)
            pipe.expire(scratch.local_only, self.scratch_ttl_seconds)
            dict_only, local_only, *_ = await pipe.execute()
        return DiffResult(dict_only=int(dict_only), local_only=int(local_only))

    async def roll_forward(self, scratch: Scratch, events: Sequence[CidSetEvent]) -> None:
        """DICT's log events (oldest first) applied to the round's file set: ADDED puts a CID in, REMOVED
        takes it out, and the time of each CID's last event is kept for `judge_candidates`."""
        if not events:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                if event.type is CidEventType.ADDED:
                    pipe.sadd(scratch.dict_cids, event.cid)
                else:
                    pipe.srem(scratch.dict_cids, event.cid)
            pipe.hset(scratch.dict_changed, mapping={e.cid: _millis(e.timestamp) for e in events})
            pipe.expire(scratch.dict_cids, self.scratch_ttl_seconds)
            pipe.expire(scratch.dict_changed, self.scratch_ttl_seconds)
            await pipe.execute()

    async def judge_candidates(self, scratch: Scratch, cutoff: datetime, *, final: bool) -> JudgedDiff:
        """Each CID of the diff judged again now (`cidsync.anchor.judge`): those in flight leave the diff,
        recent ones stay to be judged later (or leave it too when `final`), confirmed ones stay to be
        repaired. Read in batches, so a large diff never passes through one reply."""
        counts: dict[tuple[RepairSide, Verdict], int] = {}
        for side in (RepairSide.DICT_ONLY, RepairSide.LOCAL_ONLY):
            key = scratch.side(side)
            async for batch in self._batches(key):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command("SMISMEMBER", scratch.dict_cids, *batch)
                    pipe.execute_command("SMISMEMBER", scratch.pair.cids, *batch)
                    pipe.hmget(scratch.dict_changed, batch)
                    pipe.execute_command("SMISMEMBER", scratch.confirming, *batch)
                    in_dict, local, changed, confirming = await pipe.execute()
                leaving, differing = [], []
                verdicts = zip(batch, in_dict, local, changed, confirming, strict=True)
                for value, dict_has, local_has, at, once in verdicts:
                    changed_at = EPOCH + timedelta(milliseconds=int(at)) if at else None
                    verdict = judge(bool(dict_has), bool(local_has), changed_at, cutoff, bool(once))
                    if verdict in (Verdict.CONFIRMING, Verdict.CONFIRMED):
                        differing.append(value)
                    if verdict is Verdict.IN_FLIGHT or (final and verdict in (Verdict.RECENT, Verdict.CONFIRMING)):
                        leaving.append(value)
                    counts[(side, verdict)] = counts.get((side, verdict), 0) + 1
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.srem(scratch.confirming, *batch)  # confirmed only by looks in a row
                    if differing:
                        pipe.sadd(scratch.confirming, *differing)
                        pipe.expire(scratch.confirming, self.scratch_ttl_seconds)
                    if leaving:
                        pipe.srem(key, *leaving)
                    await pipe.execute()
        return JudgedDiff.of(counts)

    async def _batches(self, key: str, size: int = 500) -> AsyncIterator[list[str]]:
        """The members of a set, a batch at a time (the set may shrink meanwhile: SSCAN allows it)."""
        batch: list[str] = []
        async for member in self.redis.sscan_iter(key, count=size):
            batch.append(_text(member))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def to_repair(self, scratch: Scratch, side: RepairSide, count: int) -> list[str]:
        """Up to `count` CIDs of one side of the diff, left in place until `repaired` (crash safe)."""
        # With a count, SRANDMEMBER always answers a list (redis-py types the count-less form too).
        members = await self.redis.srandmember(scratch.side(side), count)
        return [_text(m) for m in cast(list[bytes | str], members or [])]

    async def repaired(self, scratch: Scratch, side: RepairSide, cid_value: str) -> None:
        await self.redis.srem(scratch.side(side), cid_value)

    async def left_to_repair(self, scratch: Scratch, side: RepairSide) -> int:
        return int(await self.redis.scard(scratch.side(side)))

    async def holder_of_cid(self, pair: PairKeys, cid_value: str) -> CidHolder | None:
        """The key (and entry, when known) holding a CID of the set: how a CID DICT lacks is removed."""
        found = await self.redis.hget(pair.by_cid, cid_value)
        if not found:
            return None
        kid, _, entry_id = _text(found).partition("|")
        return CidHolder(key_id=kid, entry_id=entry_id)

    async def repair(
        self,
        pair: PairKeys,
        key_id_: str,
        expected_state: str,
        cid_value: str | None,
        *,
        entry_id: str = "",
        outbox: str = "",
        notification: str = "",
    ) -> RepairStatus:
        """Set a key's CID to DICT's (None: remove it) iff no event changed it since `begin_watch` and its
        state is still `expected_state`; if it did, push `notification` onto the `outbox` list too."""
        status, _ = await self._run_script(
            "repair",
            [pair.cids, pair.vsync, pair.states, pair.scratch, pair.by_cid, pair.touched, outbox or pair.scratch,
             pair.journal],
            [
                key_id_, expected_state, cid_value or "", f"{key_id_}|{entry_id}", notification,
                self.scratch_ttl_seconds,
            ],
        )  # fmt: skip
        return RepairStatus(_text(status))

    async def outbox_slice(self, scratch: Scratch, count: int) -> list[bytes]:
        """The oldest `count` notifications waiting in the round's outbox, as the repair wrote them."""
        raw = await self.redis.lrange(scratch.outbox, 0, count - 1)
        return [item if isinstance(item, bytes) else item.encode() for item in raw]

    async def trim_outbox(self, scratch: Scratch, count: int) -> None:
        """Drop the oldest `count` notifications: only once the broker has acknowledged them."""
        await self.redis.ltrim(scratch.outbox, count, -1)

    async def drop_scratch(self, scratch: Scratch) -> int:
        return int(await self.redis.delete(*scratch.all_keys))
