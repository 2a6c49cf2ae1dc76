"""The CID store in Redis, and the activities that change it.

Layout, per (participant, key type), every key under one hash tag so the pair lives in one Redis
Cluster slot and one Lua script may touch all of it (DESIGN.md §5):

    {cid:<participant>:<key type>}:cids        SET    the active CIDs (64 hex chars)
    {cid:<participant>:<key type>}:vsync       STRING the VSync, 32 raw bytes (kept by BITOP XOR)
    {cid:<participant>:<key type>}:keys        HASH   key id -> "<sequence, 19 digits>|<cid or empty>"
    {cid:<participant>:<key type>}:by-cid      HASH   cid -> "<key id>|<entry id>", for every CID in the set
    {cid:<participant>:<key type>}:mark:<id>   STRING an event's idempotency mark, with a TTL
    {cid:<participant>:<key type>}:touched     SET    while a reconciliation runs: the key ids changed by
                                                      events since it began (see `begin_watch`)
    {cid:<participant>:<key type>}:verified    HASH   the last verification with DICT (result, time, id)

A key id is an HMAC of the PIX key under a secret of the deployment: the store never holds the key in
clear, yet the same key always maps to the same state. An empty CID in the state is a tombstone.

One Lua script applies a change atomically and only when its sequence is newer than the stored one
(DESIGN.md §4, I1-I3): duplicates and any reordering end in the state of applying the history once in
sequence order. Sequences are compared as zero-padded strings, because Lua numbers are doubles and
core's sequences (nanosecond timestamps) do not fit 53 bits.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT
from temporalio import activity

from cidsync.cid import ZERO_VSYNC
from cidsync.entry import KeyType, PairRef

SEQUENCE_DIGITS = 19  # 2**63 - 1 has 19 digits
DEFAULT_MARK_TTL_SECONDS = 24 * 3600
# The backstop for everything a reconciliation leaves in Redis (watch, scratch sets, outbox) should it
# never clean up: longer than any run is expected to last, short enough not to linger.
RECONCILIATION_TTL_SECONDS = 3 * 24 * 3600

# Shared by both scripts: move a key from one CID to another, keeping the set, the VSync and the
# reverse index in step. The VSync moves only when the set really changed, so VSync == XOR(set) holds.
# KEYS[1] set, KEYS[2] VSync, KEYS[4] scratch, `index` the reverse index, `ref` "<key id>|<entry id>".
_MOVE = """
local function xor_into(cid_hex)
  local bin = string.gsub(cid_hex, '..', function(h) return string.char(tonumber(h, 16)) end)
  redis.call('SET', KEYS[4], bin)
  redis.call('BITOP', 'XOR', KEYS[2], KEYS[2], KEYS[4])
  redis.call('DEL', KEYS[4])
end
local function move(index, ref, old_cid, new_cid)
  if old_cid ~= '' and redis.call('SREM', KEYS[1], old_cid) == 1 then
    xor_into(old_cid)
    redis.call('HDEL', index, old_cid)
  end
  if new_cid ~= '' and redis.call('SADD', KEYS[1], new_cid) == 1 then
    xor_into(new_cid)
    redis.call('HSET', index, new_cid, ref)
  end
end
"""

_APPLY = (
    _MOVE
    + """
local state = redis.call('HGET', KEYS[3], ARGV[1])
local old_sequence, old_cid = '', ''
if state then
  old_sequence = string.sub(state, 1, 19)
  old_cid = string.sub(state, 21)
  if ARGV[2] <= old_sequence then
    redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
    return {'stale', old_sequence, old_cid, redis.call('GET', KEYS[2]) or ''}
  end
end
move(KEYS[6], ARGV[1] .. '|' .. ARGV[5], old_cid, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('SADD', KEYS[7], ARGV[1])
end
return {'applied', old_sequence, old_cid, redis.call('GET', KEYS[2]) or ''}
"""
)


# Reconciliation's repair: make a key's CID what DICT says, but only if no event changed the key since the
# reconciliation began (the `touched` set, filled by the apply script) and its state is still the one read
# when the repair was decided (compare-and-set). The key's sequence is kept, so any later event still wins
# and older ones stay stale: a DICT snapshot never overwrites a newer local change. A repair that happens
# records its notification to core in the run's outbox in the same step, so none is lost or invented.
# KEYS[6] touched, KEYS[7] outbox; ARGV[4] the index ref, ARGV[5] the notification (JSON).
_REPAIR = (
    _MOVE
    + """
local state = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if state ~= ARGV[2] or redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then
  return {'changed', state}
end
local sequence, old_cid = '0000000000000000000', ''
if state ~= '' then
  sequence = string.sub(state, 1, 19)
  old_cid = string.sub(state, 21)
end
move(KEYS[5], ARGV[4], old_cid, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], sequence .. '|' .. ARGV[3])
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[7], ARGV[5])
  redis.call('EXPIRE', KEYS[7], ARGV[6])
end
return {'repaired', sequence .. '|' .. ARGV[3]}
"""
)


class RepairStatus(StrEnum):
    REPAIRED = "repaired"
    CHANGED = "changed"  # the key changed since the repair was decided: left as it is


class ApplyStatus(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # an equal or newer sequence was already applied for the key: nothing changed


class CIDChange(BaseModel):
    """One versioned change of a key's CID: `cid` None deletes (leaves a tombstone)."""

    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    key: str
    sequence: int
    cid: str | None
    event_id: str
    entry_id: str = ""  # kept in the reverse index, so a CID removed by reconciliation names its entry


class ApplyResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: ApplyStatus
    previous_sequence: int | None
    vsync: str


class CIDBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    changes: list[CIDChange]


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    applied: int
    stale: int


@dataclass(frozen=True)
class CidHolder:
    key_id: str
    entry_id: str  # "" when the CID came from an event older than the reverse index's entry ids


class LocalVSync(BaseModel):
    model_config = ConfigDict(frozen=True)

    vsync: str
    count: int


class WatchRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    ttl_seconds: int = RECONCILIATION_TTL_SECONDS


class VerificationRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    ok: bool
    at: datetime
    verification_id: str


class PairsRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    pairs: list[PairRef]


class PairVerification(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    last_result: str | None
    last_at: datetime | None
    last_ok_at: datetime | None


class KeySequenceQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    key: str


@dataclass(frozen=True)
class PairKeys:
    """The Redis keys of one (participant, key type)."""

    participant: str
    key_type: KeyType

    @property
    def tag(self) -> str:
        return f"{{cid:{self.participant}:{self.key_type.value}}}"

    @property
    def cids(self) -> str:
        return f"{self.tag}:cids"

    @property
    def vsync(self) -> str:
        return f"{self.tag}:vsync"

    @property
    def states(self) -> str:
        return f"{self.tag}:keys"

    @property
    def scratch(self) -> str:
        return f"{self.tag}:xor"

    @property
    def by_cid(self) -> str:
        return f"{self.tag}:by-cid"

    @property
    def touched(self) -> str:
        return f"{self.tag}:touched"

    @property
    def verified(self) -> str:
        return f"{self.tag}:verified"

    def mark(self, event_id: str) -> str:
        return f"{self.tag}:mark:{event_id}"


def key_id(secret: bytes, key_type: KeyType, key: str) -> str:
    """The key's identity in the store: an HMAC, so the PIX key is never stored in clear."""
    return hmac.new(secret, f"{key_type.value}\x00{key}".encode(), hashlib.sha256).hexdigest()[:32]


def _vsync_hex(raw: bytes | str | None) -> str:
    # The store's client never decodes responses (the VSync is raw bytes); str only satisfies typing.
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    return raw.hex().rjust(64, "0") if raw else ZERO_VSYNC


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CIDStore:
    """Activities on the CID store. Built once in the worker with its Redis client injected."""

    def __init__(self, redis: Redis, key_secret: bytes, mark_ttl_seconds: int = DEFAULT_MARK_TTL_SECONDS) -> None:
        self.redis = redis
        self.key_secret = key_secret
        self.mark_ttl_seconds = mark_ttl_seconds
        self._apply = redis.register_script(_APPLY)
        self._repair = redis.register_script(_REPAIR)

    def _script_call(self, change: CIDChange) -> tuple[list[str], list[str | int]]:
        pair = PairKeys(change.participant, change.key_type)
        keys = [
            pair.cids, pair.vsync, pair.states, pair.scratch, pair.mark(change.event_id), pair.by_cid, pair.touched
        ]  # fmt: skip
        args: list[str | int] = [
            key_id(self.key_secret, change.key_type, change.key),
            str(change.sequence).zfill(SEQUENCE_DIGITS),
            change.cid or "",
            self.mark_ttl_seconds,
            change.entry_id,
        ]
        return keys, args

    @activity.defn(name="apply_cid_change")
    async def apply_change(self, change: CIDChange) -> ApplyResult:
        keys, args = self._script_call(change)
        status, previous, _, raw_vsync = await self._apply(keys=keys, args=args)
        return ApplyResult(
            status=ApplyStatus(status.decode()),
            previous_sequence=int(previous) if previous else None,
            vsync=_vsync_hex(raw_vsync),
        )

    @activity.defn(name="apply_cid_batch")
    async def apply_batch(self, batch: CIDBatch) -> BatchResult:
        """Each change is still its own atomic, versioned apply; the pipeline only saves round trips.

        So how events are grouped into batches (and regrouped on redelivery) cannot change the result.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for change in batch.changes:
                keys, args = self._script_call(change)
                await self._apply(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        applied = sum(1 for reply in replies if reply[0] == b"applied")
        return BatchResult(applied=applied, stale=len(replies) - applied)

    @activity.defn(name="key_sequence")
    async def key_sequence(self, query: KeySequenceQuery) -> int | None:
        """The sequence last applied for a key (a delete included), or None if never seen."""
        pair = PairKeys(query.participant, query.key_type)
        state = await self.redis.hget(pair.states, key_id(self.key_secret, query.key_type, query.key))
        return int(state[:SEQUENCE_DIGITS]) if state else None

    # --- reconciliation's repair primitives (the activities that use them come with ReconcileVSync) -----

    async def key_state(self, pair: PairKeys, key_id_: str) -> str:
        """A key's raw state ("<sequence>|<cid>"), or "" when the store never saw it."""
        state = await self.redis.hget(pair.states, key_id_)
        return _text(state) if state else ""

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
        outbox_ttl_seconds: int = RECONCILIATION_TTL_SECONDS,
    ) -> RepairStatus:
        """Set a key's CID to DICT's (None: remove it) iff no event changed it since `begin_watch` and its
        state is still `expected_state`; if it did, push `notification` onto the `outbox` list too."""
        status, _ = await self._repair(
            keys=[pair.cids, pair.vsync, pair.states, pair.scratch, pair.by_cid, pair.touched, outbox or pair.scratch],
            args=[key_id_, expected_state, cid_value or "", f"{key_id_}|{entry_id}", notification, outbox_ttl_seconds],
        )
        return RepairStatus(_text(status))

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

    # --- reconciliation's activities on the store ----------------------------------------------------

    @activity.defn(name="local_vsync")
    async def local_vsync(self, pair: PairRef) -> LocalVSync:
        keys = PairKeys(pair.participant, pair.key_type)
        async with self.redis.pipeline(transaction=True) as pipe:  # both from the same instant
            pipe.get(keys.vsync)
            pipe.scard(keys.cids)
            raw, count = await pipe.execute()
        return LocalVSync(vsync=_vsync_hex(raw), count=int(count))

    @activity.defn(name="begin_watch")
    async def begin_watch_activity(self, request: WatchRequest) -> None:
        await self.begin_watch(PairKeys(request.participant, request.key_type), request.ttl_seconds)

    @activity.defn(name="end_watch")
    async def end_watch_activity(self, pair: PairRef) -> None:
        await self.end_watch(PairKeys(pair.participant, pair.key_type))

    @activity.defn(name="record_verification")
    async def record_verification(self, record: VerificationRecord) -> None:
        """The pair's last verification, and its last OK: what the 36-hour freshness check reads."""
        fields: dict[FieldT, EncodableT] = {
            "result": "OK" if record.ok else "NOK",
            "at": record.at.isoformat(),
            "id": record.verification_id,
        }
        if record.ok:
            fields["ok_at"] = record.at.isoformat()
        await self.redis.hset(PairKeys(record.participant, record.key_type).verified, mapping=fields)

    @activity.defn(name="last_verifications")
    async def last_verifications(self, request: PairsRequest) -> list[PairVerification]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pair in request.pairs:
                pipe.hgetall(PairKeys(pair.participant, pair.key_type).verified)
            found = await pipe.execute()
        result = []
        for pair, fields in zip(request.pairs, found, strict=True):
            text = {_text(k): _text(v) for k, v in fields.items()}
            result.append(
                PairVerification(
                    participant=pair.participant,
                    key_type=pair.key_type,
                    last_result=text.get("result"),
                    last_at=datetime.fromisoformat(text["at"]) if "at" in text else None,
                    last_ok_at=datetime.fromisoformat(text["ok_at"]) if "ok_at" in text else None,
                )
            )
        return result

    # --- reads for the CLI, the starter and tests (not activities) ----------------------------------

    async def is_marked(self, participant: str, key_type: KeyType, event_id: str) -> bool:
        return bool(await self.redis.exists(PairKeys(participant, key_type).mark(event_id)))

    async def vsync(self, participant: str, key_type: KeyType) -> str:
        return _vsync_hex(await self.redis.get(PairKeys(participant, key_type).vsync))

    async def count(self, participant: str, key_type: KeyType) -> int:
        return int(await self.redis.scard(PairKeys(participant, key_type).cids))

    async def cids(self, participant: str, key_type: KeyType) -> set[str]:
        return {_text(c) for c in await self.redis.smembers(PairKeys(participant, key_type).cids)}

    async def pairs(self) -> list[tuple[str, KeyType]]:
        """Every (participant, key type) with a VSync in the store, sorted."""
        found = set()
        async for name in self.redis.scan_iter(match="{cid:*}:vsync", count=1000):
            participant, key_type = _text(name)[5:].split("}")[0].split(":")
            found.add((participant, KeyType(key_type)))
        return sorted(found)
