"""The CID store in Redis, and the activities that change it.

Layout, per (participant, key type), every key under one hash tag so the pair lives in one Redis
Cluster slot and one Lua script may touch all of it (DESIGN.md §5):

    {cid:<participant>:<key type>}:cids        SET    the active CIDs (64 hex chars)
    {cid:<participant>:<key type>}:vsync       STRING the VSync, 32 raw bytes (kept by BITOP XOR)
    {cid:<participant>:<key type>}:keys        HASH   key id -> "<sequence, 19 digits>|<cid or empty>"
    {cid:<participant>:<key type>}:by-cid      HASH   cid -> key id, for every CID in the set
    {cid:<participant>:<key type>}:mark:<id>   STRING an event's idempotency mark, with a TTL

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
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from temporalio import activity

from cidsync.cid import ZERO_VSYNC
from cidsync.entry import KeyType

SEQUENCE_DIGITS = 19  # 2**63 - 1 has 19 digits
DEFAULT_MARK_TTL_SECONDS = 24 * 3600

# Shared by both scripts: move a key from one CID to another, keeping the set, the VSync and the
# reverse index in step. The VSync moves only when the set really changed, so VSync == XOR(set) holds.
# KEYS[1] set, KEYS[2] VSync, KEYS[4] scratch, `index` the reverse index.
_MOVE = """
local function xor_into(cid_hex)
  local bin = string.gsub(cid_hex, '..', function(h) return string.char(tonumber(h, 16)) end)
  redis.call('SET', KEYS[4], bin)
  redis.call('BITOP', 'XOR', KEYS[2], KEYS[2], KEYS[4])
  redis.call('DEL', KEYS[4])
end
local function move(index, key_id, old_cid, new_cid)
  if old_cid ~= '' and redis.call('SREM', KEYS[1], old_cid) == 1 then
    xor_into(old_cid)
    redis.call('HDEL', index, old_cid)
  end
  if new_cid ~= '' and redis.call('SADD', KEYS[1], new_cid) == 1 then
    xor_into(new_cid)
    redis.call('HSET', index, new_cid, key_id)
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
move(KEYS[6], ARGV[1], old_cid, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
return {'applied', old_sequence, old_cid, redis.call('GET', KEYS[2]) or ''}
"""
)


# Reconciliation's repair: make a key's CID what DICT says, but only if the key's state is still the one
# read when the repair was decided (compare-and-set). It keeps the key's sequence, so any later event
# still wins and older ones stay stale: a DICT snapshot never overwrites a newer local change.
_REPAIR = (
    _MOVE
    + """
local state = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if state ~= ARGV[2] then
  return {'changed', state}
end
local sequence, old_cid = '0000000000000000000', ''
if state ~= '' then
  sequence = string.sub(state, 1, 19)
  old_cid = string.sub(state, 21)
end
move(KEYS[5], ARGV[1], old_cid, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], sequence .. '|' .. ARGV[3])
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
        keys = [pair.cids, pair.vsync, pair.states, pair.scratch, pair.mark(change.event_id), pair.by_cid]
        args: list[str | int] = [
            key_id(self.key_secret, change.key_type, change.key),
            str(change.sequence).zfill(SEQUENCE_DIGITS),
            change.cid or "",
            self.mark_ttl_seconds,
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

    async def key_of_cid(self, pair: PairKeys, cid_value: str) -> str | None:
        """The key id holding a CID of the set (for removing a CID DICT does not have)."""
        found = await self.redis.hget(pair.by_cid, cid_value)
        return _text(found) if found else None

    async def repair(self, pair: PairKeys, key_id_: str, expected_state: str, cid_value: str | None) -> RepairStatus:
        """Set a key's CID to DICT's (None: remove it) iff its state is still `expected_state`."""
        status, _ = await self._repair(
            keys=[pair.cids, pair.vsync, pair.states, pair.scratch, pair.by_cid],
            args=[key_id_, expected_state, cid_value or ""],
        )
        return RepairStatus(_text(status))

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
