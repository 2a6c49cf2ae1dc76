"""Synthetic, valid entries across every key type, reproducible from a seed.

For the bundled sample, the demo and load generation. Names include accents on purpose: the CID hashes
UTF-8 bytes, and a pipeline that mangles encodings shows up as a wrong VSync.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cidsync.cid import cid, vsync
from cidsync.entry import AccountType, Entry, KeyType, OwnerType
from cidsync.events import DeletionType, EventType

_FIRST = ["João", "Maria", "José", "Ana", "Luís", "Conceição", "Antônio", "Fernanda", "Sérgio", "Lúcia"]
_LAST = ["Silva", "Souza", "Araújo", "Gonçalves", "Pereira", "Simões", "Conceição", "Brandão"]
_COMPANY = ["Padaria", "Comércio", "Construções", "Tecnologia", "Açougue", "Farmácia"]
_DOMAINS = ["example.com.br", "exemplo.org", "correio.net"]
_KEY_TYPES = list(KeyType)


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _ascii_lower(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def pair_random(participant: str, key_type: KeyType, seed: int) -> random.Random:
    """The random source of a pair's synthetic entries: the same for the same pair and seed, so the DICT
    simulator and a local store built from one seed hold the same entries; different for other pairs, since
    DICT refuses a repeated entry id or key and one simulator serves many participants at once."""
    return random.Random(f"{participant}/{key_type.value}/{seed}")


def synthetic_entry(rng: random.Random, participant: str, key_type: KeyType | None = None) -> Entry:
    """One valid entry; the owner type follows the key type where DICT ties them (CPF/CNPJ keys)."""
    key_type = key_type or rng.choice(_KEY_TYPES)
    if key_type is KeyType.CPF:
        legal = False
    elif key_type is KeyType.CNPJ:
        legal = True
    else:
        legal = rng.random() < 0.3
    tax_id = _digits(rng, 14 if legal else 11)
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if legal:
        name = f"{rng.choice(_COMPANY)} {rng.choice(_LAST)} Ltda"
    keys = {
        KeyType.CPF: tax_id,
        KeyType.CNPJ: tax_id,
        KeyType.PHONE: "+55" + _digits(rng, 2) + "9" + _digits(rng, 8),
        KeyType.EMAIL: f"{_ascii_lower(name.split()[0])}.{_digits(rng, 6)}@{rng.choice(_DOMAINS)}",
        KeyType.EVP: str(_uuid(rng)),
    }
    opened = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(3650))
    return Entry(
        id=_uuid(rng),
        request_id=_uuid(rng),
        key_type=key_type,
        key=keys[key_type],
        participant=participant,
        branch=None if rng.random() < 0.1 else _digits(rng, rng.choice([1, 4])),
        account_number=_digits(rng, rng.randrange(4, 13)),
        account_type=rng.choice(list(AccountType)),
        account_opened_at=opened,
        owner_type=OwnerType.LEGAL_PERSON if legal else OwnerType.NATURAL_PERSON,
        owner_name=name,
        owner_trade_name=(f"{rng.choice(_COMPANY)} {rng.choice(_LAST)}" if legal and rng.random() < 0.7 else None),
        owner_tax_id=tax_id,
    )


def synthetic_entries(count: int, participants: list[str], seed: int = 0) -> Iterator[Entry]:
    """`count` entries spread over `participants` and every key type, in a reproducible order.

    EMAIL keys carry random digits, so collisions in the key space are negligible at any test size.
    """
    rng = random.Random(seed)
    for index in range(count):
        yield synthetic_entry(rng, participants[index % len(participants)], _KEY_TYPES[index % len(_KEY_TYPES)])


@dataclass(frozen=True)
class SyntheticChange:
    """One step of a synthetic history: what happens to which entry (the event is built by the producer)."""

    event_type: EventType
    entry: Entry
    deletion_type: DeletionType | None = None


def synthetic_history(
    count: int,
    participants: list[str],
    *,
    seed: int = 0,
    update_ratio: float = 0.2,
    delete_ratio: float = 0.1,
    waiting_period_share: float = 0.2,
) -> Iterator[SyntheticChange]:
    """`count` changes over a growing set of entries: mostly creations, then updates and deletes of
    live entries, each entry's changes in a valid order (created, updated..., deleted at most once), and
    no key used by two entries."""
    rng = random.Random(seed)
    live: list[Entry] = []
    used_keys: set[tuple[KeyType, str]] = set()
    created = 0
    for _ in range(count):
        roll = rng.random()
        if live and roll < update_ratio:
            index = rng.randrange(len(live))
            live[index] = live[index].model_copy(update={"account_number": _digits(rng, rng.randrange(4, 13))})
            yield SyntheticChange(EventType.UPDATED, live[index])
        elif live and roll < update_ratio + delete_ratio:
            entry = live.pop(rng.randrange(len(live)))
            waiting = rng.random() < waiting_period_share
            yield SyntheticChange(
                EventType.DELETED, entry, DeletionType.WAITING_PERIOD if waiting else DeletionType.IMMEDIATE
            )
        else:
            key_type = _KEY_TYPES[created % len(_KEY_TYPES)]
            entry = synthetic_entry(rng, participants[created % len(participants)], key_type)
            # A key belongs to one entry in DICT: a drawn key that was used already (e-mail addresses
            # collide within tens of thousands) is drawn again, or two entries would share one key id.
            while (key_type, entry.key) in used_keys:
                entry = synthetic_entry(rng, entry.participant, key_type)
            used_keys.add((key_type, entry.key))
            created += 1
            live.append(entry)
            yield SyntheticChange(EventType.CREATED, entry)


def final_vsyncs(changes: Iterable[tuple[EventType, Entry]]) -> dict[tuple[str, KeyType], tuple[int, str]]:
    """What a store must hold after `changes` applied in this order: per pair, its key count and VSync.

    Computed in memory, independently of the store and its scripts, so a lost event or one applied twice
    shows as a difference (how the tests and `make bench` check a pipeline's result).
    """
    latest: dict[uuid.UUID, tuple[EventType, Entry]] = {}
    for event_type, entry in changes:
        latest[entry.id] = (event_type, entry)
    groups: dict[tuple[str, KeyType], list[str]] = {}
    for event_type, entry in latest.values():
        if event_type is not EventType.DELETED:
            groups.setdefault((entry.participant, entry.key_type), []).append(cid(entry))
    return {pair: (len(cids), vsync(cids)) for pair, cids in groups.items()}
