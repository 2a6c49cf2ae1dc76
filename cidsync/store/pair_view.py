"""The pair as it stands: its set, VSync and count read from one instant, the journal of its last
changes, and the verification records the 36-hour freshness check reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from redis.typing import EncodableT, FieldT

from cidsync.entry import KeyType
from cidsync.redis_client import RedisClient
from cidsync.store.layout import VSYNC_PATTERN, PairKeys
from cidsync.store.models import LocalView, LocalVSync, PairVerification, VerificationRecord
from cidsync.store.replies import text, vsync_hex


class PairView:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

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
        changes = (
            [] if changes_since is None else [(text(fields[b"c"]), fields[b"o"] == b"+") for _, fields in found[-3]]
        )
        raw, count = found[-2:]
        return LocalView(members=members, vsync=vsync_hex(raw), count=int(count), changes=changes)

    async def vsync(self, participant: str, key_type: KeyType) -> str:
        return vsync_hex(await self.redis.get(PairKeys(participant, key_type).vsync))

    async def count(self, participant: str, key_type: KeyType) -> int:
        return int(await self.redis.scard(PairKeys(participant, key_type).cids))

    async def cids(self, participant: str, key_type: KeyType) -> set[str]:
        return {text(c) for c in await self.redis.smembers(PairKeys(participant, key_type).cids)}

    async def pairs(self) -> list[tuple[str, KeyType]]:
        """Every (participant, key type) with a VSync in the store, sorted."""
        found = set()
        async for name in self.redis.scan_iter(match=VSYNC_PATTERN, count=1000):
            pair = PairKeys.of_key(text(name))
            found.add((pair.participant, pair.key_type))
        return sorted(found)

    async def record_verification(self, record: VerificationRecord) -> None:
        """The pair's last formal verification and its last OK; and its last proof of any kind, with how it
        was obtained (kind, VSync, log point)."""
        fields: dict[FieldT, EncodableT] = {}
        if record.kind == "formal":
            fields = {"result": "OK" if record.ok else "NOK", "at": record.at.isoformat(), "id": record.verification_id}
            if record.ok:
                fields["ok_at"] = record.at.isoformat()
        if record.ok:
            fields |= {
                "proof_at": record.at.isoformat(),
                "proof_kind": record.kind,
                "proof_vsync": record.vsync,
                "proof_log_point": record.log_point.isoformat() if record.log_point else "",
                "proof_id": record.verification_id,
            }
        if fields:
            await self.redis.hset(PairKeys(record.participant, record.key_type).verified, mapping=fields)

    async def last_verifications(self, pairs: Sequence[PairKeys]) -> list[PairVerification]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pair in pairs:
                pipe.hgetall(pair.verified)
            found = await pipe.execute()
        result = []
        for pair, fields in zip(pairs, found, strict=True):
            stored = {text(k): text(v) for k, v in fields.items()}
            result.append(
                PairVerification(
                    participant=pair.participant,
                    key_type=pair.key_type,
                    last_result=stored.get("result"),
                    last_at=datetime.fromisoformat(stored["at"]) if "at" in stored else None,
                    last_ok_at=datetime.fromisoformat(stored["ok_at"]) if "ok_at" in stored else None,
                    last_proof_at=datetime.fromisoformat(stored["proof_at"]) if "proof_at" in stored else None,
                    last_proof_kind=stored.get("proof_kind"),
                )
            )
        return result
