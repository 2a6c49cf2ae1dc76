"""CID and VSync math, exactly as the BCB DICT API spec defines them (docs/design.md §1).

Pure functions with no I/O, so workflows may call them. Checked against the published vectors in
tests/domain/test_cid.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Protocol
from uuid import UUID

from cidsync.entry import AccountType, KeyType
from cidsync.errors import InvalidInput, Problem

CID_HEX_DIGITS = 64
ZERO_VSYNC = "0" * CID_HEX_DIGITS
_CID = re.compile(r"[0-9a-f]{64}")


class CIDFields(Protocol):
    """What a CID is made of: an `Entry` (core's view) or a `DictEntry` (DICT's answer) alike."""

    @property
    def key_type(self) -> KeyType: ...
    @property
    def key(self) -> str: ...
    @property
    def owner_tax_id(self) -> str: ...
    @property
    def owner_name(self) -> str: ...
    @property
    def owner_trade_name(self) -> str | None: ...
    @property
    def participant(self) -> str: ...
    @property
    def branch(self) -> str | None: ...
    @property
    def account_number(self) -> str: ...
    @property
    def account_type(self) -> AccountType: ...
    @property
    def request_id(self) -> UUID: ...


def cid_attributes(entry: CIDFields) -> str:
    """The `&`-joined attribute string DICT hashes, in DICT's order.

    No escaping: DICT defines none, so a name containing `&` is hashed as it is. A missing trade name
    or branch is the empty string. Opening date, ownership date and owner type are not part of it.
    """
    return "&".join(
        (
            entry.key_type.value,
            entry.key,
            entry.owner_tax_id,
            entry.owner_name,
            entry.owner_trade_name or "",
            entry.participant,
            entry.branch or "",
            entry.account_number,
            entry.account_type.value,
        )
    )


def cid_of_attributes(attributes: str, request_id: UUID) -> str:
    """HMAC-SHA256 keyed by the 16 bytes of the RequestId (RFC 4122 byte order), as lowercase hex."""
    return hmac.new(request_id.bytes, attributes.encode("utf-8"), hashlib.sha256).hexdigest()


def cid(entry: CIDFields, request_id: UUID | None = None) -> str:
    """The CID of `entry`.

    `request_id` defaults to the entry's own: the RequestId of its creation in DICT (or of the claim
    that gave it to us), which an update keeps. Pass another only to model a new creation.
    """
    return cid_of_attributes(cid_attributes(entry), request_id or entry.request_id)


def check_cid(value: str) -> str:
    """`value` if it is a CID (64 lowercase hex digits), else `InvalidInput`."""
    if not _CID.fullmatch(value):
        raise InvalidInput("cid", [Problem("cid", "a CID must be 64 lowercase hexadecimal digits")])
    return value


def is_cid(value: str) -> bool:
    return _CID.fullmatch(value) is not None


def _format(value: int) -> str:
    return format(value, "064x")


def vsync(cids: Iterable[str]) -> str:
    """XOR of the 256-bit values of `cids` as 64 lowercase hex digits; the empty set gives 64 zeros.

    `cids` is a set in DICT's sense: XOR cancels a CID given twice, which is what removal relies on.
    """
    acc = 0
    for value in cids:
        acc ^= int(check_cid(value), 16)
    return _format(acc)


def xor_cid(current_vsync: str, cid_value: str) -> str:
    """Add a CID to a VSync, or remove it: with XOR both are the same single step."""
    return _format(int(check_cid(current_vsync), 16) ^ int(check_cid(cid_value), 16))


def vsync_add(current_vsync: str, cid_value: str) -> str:
    return xor_cid(current_vsync, cid_value)


def vsync_remove(current_vsync: str, cid_value: str) -> str:
    return xor_cid(current_vsync, cid_value)


def vsync_replace(current_vsync: str, old_cid: str, new_cid: str) -> str:
    """An update: the old CID leaves and the new one joins."""
    return xor_cid(xor_cid(current_vsync, old_cid), new_cid)
