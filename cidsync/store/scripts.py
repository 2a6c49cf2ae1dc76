"""The store's Lua scripts: each change is one atomic step, so the invariants hold between any two commands.

(I1) the VSync is the XOR of the set, (I2) a key has at most one current CID, (I3) any permutation and
duplication of a history gives the state of applying it once in sequence order (docs/design.md §4).
Sequences are compared as zero-padded strings, because Lua numbers are doubles and core's sequences
(nanosecond timestamps) do not fit 53 bits.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from cidsync.redis_client import RedisClient
from cidsync.store.layout import PairKeys
from cidsync.store.layout_version import PairLayoutChanged
from cidsync.store.replies import text

# How long the pair's journal keeps each change of its set: far longer than a proof looks back (seconds),
# short enough to stay small on a pair taking a thousand changes a second.
JOURNAL_SECONDS = 30

# Shared by both scripts: move a key from one CID to another, keeping the set, the VSync and the
# reverse index in step. The VSync moves only when the set really changed, so VSync == XOR(set) holds,
# and only then is the change journalled (a stream whose ids are Redis's clock, trimmed by age): a proof
# reads it to tell the local set's last changes from what DICT's log shows (`cidsync.anchor.as_of`).
# KEYS[1] set, KEYS[2] VSync, KEYS[4] scratch, KEYS[8] journal, `index` the reverse index, `ref`
# "<key id>|<entry id>".
MOVE = (
    f"""
local function journal(cid_hex, op)
  local now = redis.call('TIME')
  local oldest = string.format('%d', (tonumber(now[1]) - {JOURNAL_SECONDS}) * 1000)
  redis.call('XADD', KEYS[8], 'MINID', '~', oldest, '*', 'c', cid_hex, 'o', op)
end
"""
    + """
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
    journal(old_cid, '-')
  end
  if new_cid ~= '' and redis.call('SADD', KEYS[1], new_cid) == 1 then
    xor_into(new_cid)
    redis.call('HSET', index, new_cid, ref)
    journal(new_cid, '+')
  end
end
"""
)


# The layout fence, first in every write script: a pair a migration has moved to a layout its writer does
# not know (a release older than the migration, still running) is left alone, and the caller told so,
# rather than written in a layout no one reads any more. `accepted` is ",1," or ",1,2,"; a pair without
# a `layout` key is at version 1.
def fence(layout_key: int, accepted_arg: int) -> str:
    return f"""
local layout = redis.call('GET', KEYS[{layout_key}]) or '1'
if not string.find(ARGV[{accepted_arg}], ',' .. layout .. ',', 1, true) then
  return {{'layout', layout}}
end
"""


def fenced(reply: Any, pair: PairKeys) -> None:
    """Raise if a write script's reply says the fence stopped it (nothing was written)."""
    if reply[0] == b"layout":
        raise PairLayoutChanged(
            f"{pair.tag} is at layout version {text(reply[1])}, which this release does not write: it is "
            f"left to a release that does (`cidsync store layout` shows the store's)"
        )


# An event's change: applied only when its sequence is newer than the key's stored one (`stale` when not,
# `duplicate` when the stored state is this very change); the idempotency mark is set either way, in the
# same step; a key changed while a reconciliation watches is recorded.
# KEYS: set, VSync, states, scratch, mark, reverse index, touched, journal, layout.
# ARGV: key id, sequence (19 digits), CID or "", mark TTL, entry id, accepted layouts.
APPLY = (
    MOVE
    + fence(9, 6)
    + """
local state = redis.call('HGET', KEYS[3], ARGV[1])
local old_sequence, old_cid = '', ''
if state then
  old_sequence = string.sub(state, 1, 19)
  old_cid = string.sub(state, 21)
  if ARGV[2] <= old_sequence then
    redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
    local seen = 'stale'
    if ARGV[2] == old_sequence and ARGV[3] == old_cid then
      seen = 'duplicate'
    end
    return {seen, old_sequence, old_cid, redis.call('GET', KEYS[2]) or ''}
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
# KEYS: set, VSync, states, scratch, reverse index, touched, outbox, journal, layout.
# ARGV: key id, expected state, CID or "", index ref, notification (JSON) or "", outbox TTL, accepted layouts.
REPAIR = (
    MOVE
    + fence(9, 7)
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


class ScriptLoader:
    """The store's scripts, loaded once per process on every primary, and again after a NOSCRIPT (a
    restarted Redis, or a primary of a cluster, starts with none). Shared by every part of the store.

    Not redis-py's `Script`: on a cluster its fallback has every caller that meets NOSCRIPT load the
    script on every primary at once, and concurrent callers then failed on half-open connections
    ("'NoneType' object has no attribute 'writelines'", redis-py 8.1, seen in the property tests); its
    pipelines ask SCRIPT EXISTS before every batch, and its cluster pipeline loads nothing. Here one
    caller loads, the others wait for it. Every script is safe to run twice, so a batch is simply sent
    again after a NOSCRIPT."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._scripts = {
            name: (body, hashlib.sha1(body.encode()).hexdigest())
            for name, body in (("apply", APPLY), ("repair", REPAIR))
        }
        self._loaded = 0  # how many times the scripts were loaded: 0, not yet
        self._loading = asyncio.Lock()

    async def run(self, name: str, keys: list[str], args: Sequence[str | int]) -> Any:
        """EVALSHA, the scripts loaded first, and loaded again once after a NOSCRIPT."""
        sha = self._scripts[name][1]
        loaded = await self._ensure()
        try:
            return await self.redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._ensure(reload_after=loaded)
            return await self.redis.evalsha(sha, len(keys), *keys, *args)

    async def pipelined(self, name: str, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        """The script once per call, in one pipeline (per node, on a cluster); sent again whole after a
        NOSCRIPT: the calls it had run then run again, which every script allows."""
        sha = self._scripts[name][1]
        for attempt in (1, 2):
            loaded = await self._ensure()
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)  # routed by its keys
                    replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._ensure(reload_after=loaded)
        raise AssertionError("unreachable")

    async def _ensure(self, reload_after: int | None = None) -> int:
        """Load the scripts if they never were, or (`reload_after`) if no one has since that load; the
        load's number."""
        async with self._loading:
            if self._loaded == 0 or self._loaded == reload_after:
                for body, sha in self._scripts.values():
                    loaded = await self.redis.script_load(body)  # on every primary, on a cluster
                    if text(loaded) != sha:
                        raise RuntimeError(f"Redis names the store's script {text(loaded)}, not {sha}")
                self._loaded += 1
            return self._loaded
