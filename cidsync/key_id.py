"""The key id: how the store (and everything Temporal sees) names a PIX key without holding it.

An HMAC-SHA256 of the key type and key under the deployment's secret (`CIDSYNC_KEY_SECRET`), cut to 128
bits: the same key always maps to the same id, and without the secret the id cannot be turned back into a
key by trying every CPF or phone number (a plain hash could: those key spaces are small).

Every role that names keys must use the same secret: the starter hashes the keys of incoming events,
the worker those of entries repaired from DICT. Two secrets would give one key two ids, two current CIDs
and a wrong VSync, silently. So the store keeps a fingerprint of the secret (`fingerprint`) and every
role checks it at start (`CIDStore.check_key_secret`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Annotated

from pydantic import AfterValidator

from cidsync.entry import KeyType

KEY_ID_HEX_DIGITS = 32
KEY_ID = re.compile(r"[0-9a-f]{32}")


def _check_key_id(value: str) -> str:
    if not KEY_ID.fullmatch(value):
        raise ValueError("a key id must be 32 lowercase hex digits (see `cidsync key-id`)")
    return value


KeyId = Annotated[str, AfterValidator(_check_key_id)]


def key_id(secret: bytes, key_type: KeyType, key: str) -> str:
    return hmac.new(secret, f"{key_type.value}\x00{key}".encode(), hashlib.sha256).hexdigest()[:KEY_ID_HEX_DIGITS]


def fingerprint(secret: bytes) -> str:
    """Identifies the secret without revealing it (an HMAC of a fixed label, never a key)."""
    return hmac.new(secret, b"cidsync key secret fingerprint v1", hashlib.sha256).hexdigest()[:16]


class KeySecretMismatch(RuntimeError):
    """This process hashes keys with another secret than the one the store was built with."""
