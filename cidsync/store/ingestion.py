"""Ingestion: an event's change applied to its pair (one script, atomic and versioned), and the
idempotency marks the starter and the batch look up."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from opentelemetry.trace import SpanKind

from cidsync.change import CIDChange
from cidsync.entry import KeyType
from cidsync.redis_client import RedisClient
from cidsync.store.layout import SEQUENCE_DIGITS, PairKeys
from cidsync.store.models import ApplyResult, ApplyStatus, BatchResult
from cidsync.store.replies import text, vsync_hex
from cidsync.store.scripts import ScriptLoader, fenced
from cidsync.telemetry import tracing

REDIS_SCRIPT = {"db.system.name": "redis", "db.operation.name": "EVALSHA"}


def _apply_attributes(change: CIDChange) -> dict[str, str | int]:
    """A span about one apply: ids, the key id and the pair; no key, no CID (docs/design.md §5)."""
    return {
        **REDIS_SCRIPT,
        "cidsync.event_id": str(change.event_id),
        "cidsync.participant": change.participant,
        "cidsync.key_type": change.key_type.value,
        "cidsync.key_id": change.key_id,
        "cidsync.sequence": change.sequence,
    }


class Ingestion:
    def __init__(self, redis: RedisClient, scripts: ScriptLoader, mark_ttl_seconds: int, layouts: str) -> None:
        self.redis = redis
        self.scripts = scripts
        self.mark_ttl_seconds = mark_ttl_seconds
        self.layouts = layouts  # the layouts this writer knows, for the scripts' fence

    def _script_call(self, change: CIDChange) -> tuple[list[str], list[str | int]]:
        pair = PairKeys(change.participant, change.key_type)
        keys = [
            pair.cids,
            pair.vsync,
            pair.states,
            pair.scratch,
            pair.mark(str(change.event_id)),
            pair.by_cid,
            pair.touched,
            pair.journal,
            pair.layout,
        ]
        args: list[str | int] = [
            change.key_id,
            str(change.sequence).zfill(SEQUENCE_DIGITS),
            change.cid or "",
            self.mark_ttl_seconds,
            str(change.entry_id),
            self.layouts,
        ]
        return keys, args

    async def apply(self, change: CIDChange) -> ApplyResult:
        keys, args = self._script_call(change)
        with tracing.span("redis apply", kind=SpanKind.CLIENT, attributes=_apply_attributes(change)) as span:
            reply = await self.scripts.run("apply", keys, args)
            fenced(reply, PairKeys(change.participant, change.key_type))
            status, previous, _, raw_vsync = reply
            if span is not None:
                span.set_attribute("cidsync.outcome", text(status))
        return ApplyResult(
            status=ApplyStatus(text(status)),
            previous_sequence=int(previous) if previous else None,
            vsync=vsync_hex(raw_vsync),
        )

    async def apply_batch(self, changes: Iterable[CIDChange]) -> BatchResult:
        """Each change is still its own atomic, versioned apply; the pipeline only saves round trips.

        So how events are grouped into batches (and regrouped on redelivery) cannot change the result.
        """
        changes_ = list(changes)
        calls = [self._script_call(change) for change in changes_]
        with tracing.span("redis apply batch", kind=SpanKind.CLIENT, attributes=REDIS_SCRIPT) as span:
            replies: list[list[bytes]] = await self.scripts.pipelined("apply", calls)
            for reply, change in zip(replies, changes_, strict=True):
                fenced(reply, PairKeys(change.participant, change.key_type))
            seen = Counter(reply[0] for reply in replies)
            if span is not None:
                span.set_attributes({"db.operation.batch.size": len(replies), "cidsync.applied": seen[b"applied"]})
        return BatchResult(applied=seen[b"applied"], stale=seen[b"stale"], duplicate=seen[b"duplicate"])

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
        return text(state) if state else ""
