"""Where everything lives in Redis: one place for the pair's keys and a reconciliation's scratch keys.

Per (participant, key type), all under the hash tag `{cid:<participant>:<key type>}`:

    ...:cids        SET    the active CIDs (64 hex chars)
    ...:vsync       STRING the VSync, 32 raw bytes (kept by BITOP XOR)
    ...:keys        HASH   key id -> "<sequence, 19 digits>|<cid or empty>"; an empty CID is a tombstone
    ...:by-cid      HASH   cid -> "<key id>|<entry id>", for every CID in the set
    ...:mark:<id>   STRING an event's idempotency mark, with a TTL
    ...:touched     SET    while a reconciliation runs: the key ids changed by events since it began
    ...:verified    HASH   the last verification with DICT (result, time, id, last OK time)
    ...:layout      STRING the pair's layout version once a migration moved it past version 1 (absent: 1);
                           every write script refuses a pair whose layout its writer does not know
    ...:journal     STREAM each change of the set ("c" the CID, "o" + or -), ids from Redis's clock,
                           kept 30 s: what a proof undoes to see the set as of a point of DICT's log
    ...:xor         STRING scratch for one BITOP inside a script (never outlives it)
    ...:recon:<run>:dict | :dict-changed | :confirming | :dict-only | :local-only | :outbox
                           one reconciliation round's scratch: DICT's CID file rolled forward with DICT's
                           log, when the log last changed each CID (ms), the diff both ways, and the
                           notifications for core written with each repair (all with a TTL)

Outside any pair: `cidsync:key-secret` holds a fingerprint of the key secret (see `key_id`), and
`cidsync:layout` (HASH: `version`, and `migrating_to` while a migration runs) the layout version of the
whole store, which every role checks at start (`cidsync.store.layout_version`).

This file describes layout version 1. A change to any key's name, type or encoding is a new version with
a migration (docs/development.md, "Changing the store's layout").

A key id, never the PIX key, names a key: the store holds no personal data but the outbox's entries,
which wait there for core (with a TTL) as docs/design.md §5 allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from cidsync.entry import KeyType

SEQUENCE_DIGITS = 19  # 2**63 - 1 has 19 digits: sequences are compared as zero-padded strings in Lua
DEFAULT_MARK_TTL_SECONDS = 24 * 3600
# The backstop for everything a reconciliation leaves in Redis (watch, scratch sets, outbox) should it
# never clean up: longer than any run is expected to last, short enough not to linger.
RECONCILIATION_TTL_SECONDS = 3 * 24 * 3600
KEY_SECRET_CHECK = "cidsync:key-secret"
LAYOUT_KEY = "cidsync:layout"
PAIR_PATTERNS = ("{cid:*}:vsync", "{cid:*}:keys")  # a pair with a state has one of them, or both
VSYNC_PATTERN = "{cid:*}:vsync"  # one per pair that ever held a CID
MARK_PATTERN = "{cid:*}:mark:*"


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
    def journal(self) -> str:
        return f"{self.tag}:journal"

    @property
    def verified(self) -> str:
        return f"{self.tag}:verified"

    @property
    def layout(self) -> str:
        return f"{self.tag}:layout"

    def mark(self, event_id: str) -> str:
        return f"{self.tag}:mark:{event_id}"

    @classmethod
    def of_key(cls, name: str) -> PairKeys:
        """The pair one of whose keys this is (what `VSYNC_PATTERN` and `PAIR_PATTERNS` find)."""
        participant, key_type = name.removeprefix("{cid:").split("}")[0].split(":")
        return cls(participant, KeyType(key_type))


class RepairSide(StrEnum):
    DICT_ONLY = "dict_only"  # add locally what DICT has
    LOCAL_ONLY = "local_only"  # remove locally what DICT does not have


class Scratch(BaseModel):
    """The scratch keys of one reconciliation round of one pair (an activity input: names, no data)."""

    model_config = ConfigDict(frozen=True)

    participant: str
    key_type: KeyType
    run_id: str

    @property
    def pair(self) -> PairKeys:
        return PairKeys(self.participant, self.key_type)

    @property
    def _base(self) -> str:
        return f"{self.pair.tag}:recon:{self.run_id}"

    @property
    def dict_cids(self) -> str:
        return f"{self._base}:dict"

    @property
    def dict_changed(self) -> str:
        """HASH cid -> DICT's timestamp (ms) of the last log event for it since the file's snapshot."""
        return f"{self._base}:dict-changed"

    @property
    def confirming(self) -> str:
        """SET the diff's CIDs that differed with no recent change in DICT at the last look."""
        return f"{self._base}:confirming"

    @property
    def dict_only(self) -> str:
        return f"{self._base}:dict-only"

    @property
    def local_only(self) -> str:
        return f"{self._base}:local-only"

    def side(self, side: RepairSide) -> str:
        return self.dict_only if side is RepairSide.DICT_ONLY else self.local_only

    @property
    def outbox(self) -> str:
        """Notifications to core, written with each repair, published by `publish_outbox`."""
        return f"{self._base}:outbox"

    @property
    def all_keys(self) -> list[str]:
        return [self.dict_cids, self.dict_changed, self.confirming, self.dict_only, self.local_only, self.outbox]
