"""A reconciliation's work in Redis: the watch on keys changed meanwhile, DICT's CID file in a scratch set,
the diff computed inside Redis and judged against DICT's log, and the repair of one key (a script that
leaves a key an event changed alone and queues core's notification in the round's outbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import cast

from cidsync.anchor import EPOCH, Verdict, judge
from cidsync.bridge.models import CIDEventType, CIDSetEvent
from cidsync.redis_client import RedisClient
from cidsync.store.layout import PairKeys, RepairSide, Scratch
from cidsync.store.models import CIDHolder, DiffResult, JudgedDiff, RepairStatus
from cidsync.store.replies import millis, text
from cidsync.store.scripts import ScriptLoader, fenced


class ReconciliationScratch:
    def __init__(self, redis: RedisClient, scripts: ScriptLoader, scratch_ttl_seconds: int, layouts: str) -> None:
        self.redis = redis
        self.scripts = scripts
        self.scratch_ttl_seconds = scratch_ttl_seconds
        self.layouts = layouts  # the layouts this writer knows, for the scripts' fence

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

    async def roll_forward(self, scratch: Scratch, events: Sequence[CIDSetEvent]) -> None:
        """DICT's log events (oldest first) applied to the round's file set: ADDED puts a CID in, REMOVED
        takes it out, and the time of each CID's last event is kept for `judge_candidates`."""
        if not events:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                if event.type is CIDEventType.ADDED:
                    pipe.sadd(scratch.dict_cids, event.cid)
                else:
                    pipe.srem(scratch.dict_cids, event.cid)
            pipe.hset(scratch.dict_changed, mapping={e.cid: millis(e.timestamp) for e in events})
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
            batch.append(text(member))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def to_repair(self, scratch: Scratch, side: RepairSide, count: int) -> list[str]:
        """Up to `count` CIDs of one side of the diff, left in place until `repaired` (crash safe)."""
        # With a count, SRANDMEMBER always answers a list (redis-py types the count-less form too).
        members = await self.redis.srandmember(scratch.side(side), count)
        return [text(m) for m in cast(list[bytes | str], members or [])]

    async def repaired(self, scratch: Scratch, side: RepairSide, cid_value: str) -> None:
        await self.redis.srem(scratch.side(side), cid_value)

    async def left_to_repair(self, scratch: Scratch, side: RepairSide) -> int:
        return int(await self.redis.scard(scratch.side(side)))

    async def holder_of_cid(self, pair: PairKeys, cid_value: str) -> CIDHolder | None:
        """The key (and entry, when known) holding a CID of the set: how a CID DICT lacks is removed."""
        found = await self.redis.hget(pair.by_cid, cid_value)
        if not found:
            return None
        kid, _, entry_id = text(found).partition("|")
        return CIDHolder(key_id=kid, entry_id=entry_id)

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
        reply = await self.scripts.run(
            "repair",
            [
                pair.cids,
                pair.vsync,
                pair.states,
                pair.scratch,
                pair.by_cid,
                pair.touched,
                outbox or pair.scratch,
                pair.journal,
                pair.layout,
            ],
            [
                key_id_,
                expected_state,
                cid_value or "",
                f"{key_id_}|{entry_id}",
                notification,
                self.scratch_ttl_seconds,
                self.layouts,
            ],
        )
        fenced(reply, pair)
        return RepairStatus(text(reply[0]))

    async def drop_scratch(self, scratch: Scratch) -> int:
        return int(await self.redis.delete(*scratch.all_keys))
