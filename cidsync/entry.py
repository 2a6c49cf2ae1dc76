"""A DICT entry as core banking describes it, validated by DICT's own rules.

Validation here is what DICT itself would accept (docs/design.md §1), no stricter and no looser: cidsync
mirrors DICT, it does not gatekeep it. An entry DICT holds must never be refused here, or its CID would
silently go missing from the VSync. So nothing is normalised either: an upper-case e-mail is an error,
not something we lower-case, because the CID of the lowered key would not be the CID DICT computed.

Messages never echo the offending value: keys, names and tax ids are personal data (docs/design.md §5), and
these messages travel to stderr, logs and dead-letter properties.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from cidsync.errors import InvalidInput, Problem, validated, validated_json


class KeyType(StrEnum):
    CPF = "CPF"
    CNPJ = "CNPJ"
    PHONE = "PHONE"
    EMAIL = "EMAIL"
    EVP = "EVP"


class AccountType(StrEnum):
    CACC = "CACC"
    SVGS = "SVGS"
    SLRY = "SLRY"
    TRAN = "TRAN"


class OwnerType(StrEnum):
    NATURAL_PERSON = "NATURAL_PERSON"
    LEGAL_PERSON = "LEGAL_PERSON"


EMAIL_MAX_LENGTH = 77

_KEY_RULES: dict[KeyType, tuple[re.Pattern[str], str]] = {
    KeyType.CPF: (re.compile(r"[0-9]{11}"), "a CPF key must be exactly 11 digits"),
    KeyType.CNPJ: (re.compile(r"[0-9]{14}"), "a CNPJ key must be exactly 14 digits"),
    KeyType.PHONE: (
        re.compile(r"\+[1-9][0-9]{1,14}"),
        "a PHONE key must be E.164: '+', a non-zero digit, then 1 to 14 digits",
    ),
    # DICT's rule is "lower case, at most 77 characters"; the one '@' with text on both sides is the
    # least any address has, and catches a key sent with the wrong key type.
    KeyType.EMAIL: (
        re.compile(r"[^@\s]+@[^@\s]+"),
        f"an EMAIL key must be one lower-case address (local@domain), at most {EMAIL_MAX_LENGTH} characters",
    ),
    KeyType.EVP: (
        re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        "an EVP key must be a lower-case UUID with hyphens",
    ),
}

_TAX_ID_DIGITS = {OwnerType.NATURAL_PERSON: 11, OwnerType.LEGAL_PERSON: 14}
# Compiled once: `re.fullmatch` with a pattern string looks it up in re's cache on every call, ~3% of the
# starter's time in batch mode (issue 11's profile).
_TAX_ID = {owner: re.compile(rf"[0-9]{{{digits}}}") for owner, digits in _TAX_ID_DIGITS.items()}
_ANY_TAX_ID = re.compile(r"[0-9]{11}|[0-9]{14}")


def _pattern(regex: str, message: str) -> AfterValidator:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


PARTICIPANT = re.compile(r"[0-9]{8}")
PARTICIPANT_RULE = "a participant (ISPB) must be exactly 8 digits"
Participant = Annotated[str, _pattern(PARTICIPANT.pattern, PARTICIPANT_RULE)]
Branch = Annotated[str, _pattern(r"[0-9]{1,4}", "a branch must be 1 to 4 digits (null when there is none)")]
AccountNumber = Annotated[str, _pattern(r"[0-9]{1,20}", "an account number must be 1 to 20 digits")]


def check_participant(value: str, *, field: str, what: str = "request") -> str:
    """`value` if it is a participant (ISPB), else `InvalidInput` naming `field`: the same rule everywhere."""
    if not PARTICIPANT.fullmatch(value):
        raise InvalidInput(what, [Problem(field, PARTICIPANT_RULE)])
    return value


def key_problem(key_type: KeyType, key: str) -> str | None:
    """Why `key` is not a valid DICT key of `key_type`, or None when it is."""
    pattern, message = _KEY_RULES[key_type]
    if not pattern.fullmatch(key):
        return message
    if key_type is KeyType.EMAIL and (len(key) > EMAIL_MAX_LENGTH or key != key.lower()):
        return message
    return None


class DictEntry(BaseModel):
    """An entry as DICT holds it (what getEntryByCid returns): the event contract's `entry` without core's
    entry id, which DICT never knew. Core finds its own record by the key.

    Field order matters: pydantic validates in declaration order, so `key` can be checked against an
    already-valid `key_type`, and `owner_tax_id` against `owner_type`, while every independent field
    is still checked and reported in the same error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    request_id: UUID
    key_type: KeyType
    key: str
    participant: Participant
    branch: Branch | None = None
    account_number: AccountNumber
    account_type: AccountType
    account_opened_at: AwareDatetime
    owner_type: OwnerType
    owner_name: str = Field(min_length=1)
    owner_trade_name: str | None = Field(default=None, min_length=1)
    owner_tax_id: str

    @field_validator("key")
    @classmethod
    def _key_matches_type(cls, key: str, info: ValidationInfo) -> str:
        key_type = info.data.get("key_type")
        if key_type is not None and (problem := key_problem(key_type, key)) is not None:
            raise ValueError(problem)
        return key

    @field_validator("owner_trade_name")
    @classmethod
    def _trade_name_only_for_companies(cls, trade_name: str | None, info: ValidationInfo) -> str | None:
        if trade_name is not None and info.data.get("owner_type") is OwnerType.NATURAL_PERSON:
            raise ValueError("only a LEGAL_PERSON owner has a trade name (use null)")
        return trade_name

    @field_validator("owner_tax_id")
    @classmethod
    def _tax_id_matches_owner(cls, tax_id: str, info: ValidationInfo) -> str:
        owner_type = info.data.get("owner_type")
        if owner_type is None:
            if not _ANY_TAX_ID.fullmatch(tax_id):
                raise ValueError("an owner tax id must be 11 digits (CPF) or 14 digits (CNPJ)")
            return tax_id
        digits = _TAX_ID_DIGITS[owner_type]
        if not _TAX_ID[owner_type].fullmatch(tax_id):
            kind = "CPF" if owner_type is OwnerType.NATURAL_PERSON else "CNPJ"
            raise ValueError(f"a {owner_type.value} owner's tax id must be exactly {digits} digits ({kind})")
        return tax_id


class Entry(DictEntry):
    """The `entry` object of the event contract (docs/design.md, "Events"): DICT's entry and core's id."""

    id: UUID

    def in_dict(self) -> DictEntry:
        """What DICT holds of this entry: all of it but core's id."""
        return DictEntry.model_validate(self.model_dump(exclude={"id"}))


class PairRef(BaseModel):
    """One (participant, key type): the unit DICT verifies and reconciles (one VSync each)."""

    model_config = ConfigDict(frozen=True)

    participant: Participant
    key_type: KeyType


def parse_entry(data: Any) -> Entry:
    """Validate a decoded JSON object as an entry; raises `InvalidInput` naming every bad field."""
    return validated(Entry, data, where="entry")


def parse_dict_entry(data: Any) -> DictEntry:
    """Validate a decoded object as DICT's entry (no entry id); raises `InvalidInput` naming every bad field."""
    return validated(DictEntry, data, where="entry")


def parse_entry_json(raw: str | bytes) -> Entry:
    """Validate JSON text as an entry; raises `InvalidInput` naming every bad field."""
    return validated_json(Entry, raw, where="entry")


def parse_jsonl_entries(lines: Iterable[str], source: str) -> Iterator[Entry]:
    """Entries from JSON Lines, one `entry` object a line; a bad line is reported by its number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse_entry_json(line)
        except InvalidInput as error:
            raise InvalidInput(f"{source} line {number}", error.problems) from None
