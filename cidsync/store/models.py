"""What goes into the store and what comes out: results as counts, the pair's view, verification records.

The change itself (`cidsync.change.CIDChange`, what Temporal sees of an entry event) is the domain's; the
models here validate what they carry, so a result that could only have come from a bug fails where it is
made, not inside Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cidsync.anchor import Verdict
from cidsync.entry import KeyType
from cidsync.store.layout import RepairSide


class ApplyStatus(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # a newer sequence was already applied for the key (or another change of the same): nothing changed
    # This very change (same sequence, same CID) is already the key's state: an earlier attempt applied it
    # (a local activity run again after its workflow task timed out, a worker killed after the write) or a
    # duplicate of the event did. Nothing changed, and the change is in the store.
    DUPLICATE = "duplicate"


class ApplyResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: ApplyStatus
    previous_sequence: int | None
    vsync: str


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    applied: int
    stale: int
    duplicate: int = 0  # absent from the results recorded before the status existed


class RepairStatus(StrEnum):
    REPAIRED = "repaired"
    CHANGED = "changed"  # the key changed since the repair was decided: left as it is


class CIDHolder(BaseModel):
    model_config = ConfigDict(frozen=True)

    key_id: str
    entry_id: str  # "" when the CID came from an event older than the reverse index's entry ids


class LocalVSync(BaseModel):
    model_config = ConfigDict(frozen=True)

    vsync: str
    count: int


class LocalView(BaseModel):
    """Which of some CIDs the local set holds, and its VSync, read at one instant."""

    model_config = ConfigDict(frozen=True)

    members: list[bool]
    vsync: str
    count: int
    changes: list[tuple[str, bool]] = []  # the set's journalled changes asked for: (CID, added), oldest first


class VerificationRecord(BaseModel):
    """A verification of a pair and how it was obtained: `formal` is DICT's `VerifySync` answer (what the
    36-hour rule counts); `log` is a log-anchored proof (DICT's verifier after a point of its log equal to
    the local VSync reconstructed at that point), recorded only when it holds."""

    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    ok: bool
    at: datetime
    verification_id: str
    kind: Literal["formal", "log"] = "formal"
    vsync: str = ""  # the VSync proved (the local one, or the one predicted from it and DICT's log)
    log_point: datetime | None = None  # where DICT's log was read up to, for a proof that used it


class PairVerification(BaseModel):
    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    last_result: str | None
    last_at: datetime | None
    last_ok_at: datetime | None
    last_proof_at: datetime | None = None  # the last proof of any kind (formal OK or log-anchored)
    last_proof_kind: str | None = None


class DiffResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    dict_only: int
    local_only: int


class JudgedDiff(BaseModel):
    """A diff's CIDs after a look at DICT's log and the local set now (`cidsync.anchor`), by side."""

    model_config = ConfigDict(frozen=True)

    dict_only: int  # confirmed: DICT has it, the local set lacks it, for longer than the grace
    local_only: int  # confirmed the other way
    in_flight: int  # agreed on by now: changes that were on their way (left the diff)
    recent: int  # DICT changed them within the grace, or they differed at one look only: judged again later

    @classmethod
    def of(cls, counts: Mapping[tuple[RepairSide, Verdict], int]) -> JudgedDiff:
        def total(verdict: Verdict, side: RepairSide | None = None) -> int:
            return sum(n for (s, v), n in counts.items() if v is verdict and side in (None, s))

        return cls(
            dict_only=total(Verdict.CONFIRMED, RepairSide.DICT_ONLY),
            local_only=total(Verdict.CONFIRMED, RepairSide.LOCAL_ONLY),
            in_flight=total(Verdict.IN_FLIGHT),
            recent=total(Verdict.RECENT) + total(Verdict.CONFIRMING),
        )
