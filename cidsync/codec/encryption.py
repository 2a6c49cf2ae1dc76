"""AES-256-GCM payload codec with key ids, for rotation without re-encrypting history.

Every payload is encrypted with the active key; its metadata names the key (`encryption-key-id`), so a
worker holding the old keys still decodes runs started before a rotation. The key id is also bound as
associated data: a payload relabelled with another key id fails authentication instead of decoding with
the wrong key. A 12-byte random nonce precedes each ciphertext (NIST SP 800-38D; 2^32 encryptions per key
stay far below the collision bound at our volumes, and rotation renews it).

Keys come from the environment (`CIDSYNC_CODEC_KEYS`) or a file (`CIDSYNC_CODEC_KEYS_FILE`, for secrets
mounted by the platform): `id=base64key` entries, comma- or newline-separated, the first one active unless
`CIDSYNC_CODEC_ACTIVE_KEY` names another. Each key is 32 random bytes (`cidsync codec-key` makes one).
Keys never appear in logs or errors; a bad setting is an error naming its variable.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from cidsync.codec import KEYS_FILE_VARIABLE, KEYS_VARIABLE
from cidsync.errors import InvalidInput, Problem

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
ACTIVE_VARIABLE = "CIDSYNC_CODEC_ACTIVE_KEY"
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CodecError(RuntimeError):
    """A payload this process cannot decode: an unknown key id, or a key that does not authenticate it."""


@dataclass(frozen=True)
class KeyRing:
    """The keys this process may decode with, and the one it encrypts with."""

    keys: Mapping[str, bytes]
    active: str

    @classmethod
    def parse(cls, text: str, source: str, active: str | None = None) -> KeyRing:
        """`id=base64key` entries separated by commas or newlines; `#` starts a comment line."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for raw in re.split(r"[,\n]", text):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            key_id, separator, encoded = entry.partition("=")
            key_id = key_id.strip()
            if not separator or not _KEY_ID.fullmatch(key_id):
                raise InvalidInput(
                    "settings",
                    [Problem(source, "each entry is ID=BASE64KEY, the id of 1-64 letters, digits, '.', '_' or '-'")],
                )
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("settings", [Problem(source, f"key {key_id} is not base64")]) from None
            if len(key) != 32:
                raise InvalidInput(
                    "settings", [Problem(source, f"key {key_id} must be 32 bytes (AES-256), not {len(key)}")]
                )
            if key_id in keys:
                raise InvalidInput("settings", [Problem(source, f"key {key_id} is given twice")])
            keys[key_id] = key
            order.append(key_id)
        if not keys:
            raise InvalidInput("settings", [Problem(source, "names no key")])
        chosen = active or order[0]
        if chosen not in keys:
            raise InvalidInput("settings", [Problem(ACTIVE_VARIABLE, f"{chosen} is not among the keys of {source}")])
        return cls(keys, chosen)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> KeyRing | None:
        """The configured keys, or None when encryption is not configured."""
        environ = os.environ if environ is None else environ
        inline, path = environ.get(KEYS_VARIABLE, "").strip(), environ.get(KEYS_FILE_VARIABLE, "").strip()
        active = environ.get(ACTIVE_VARIABLE, "").strip() or None
        if inline and path:
            raise InvalidInput("settings", [Problem(KEYS_VARIABLE, f"set it or {KEYS_FILE_VARIABLE}, not both")])
        if path:
            try:
                text = Path(path).read_text()
            except OSError as error:
                raise InvalidInput(
                    "settings", [Problem(KEYS_FILE_VARIABLE, f"cannot be read: {error.strerror}")]
                ) from None
            return cls.parse(text, KEYS_FILE_VARIABLE, active)
        if inline:
            return cls.parse(inline, KEYS_VARIABLE, active)
        if active:
            raise InvalidInput("settings", [Problem(ACTIVE_VARIABLE, f"needs {KEYS_VARIABLE} or {KEYS_FILE_VARIABLE}")])
        return None


def new_key() -> str:
    """32 random bytes, base64: a fresh key for `CIDSYNC_CODEC_KEYS`."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    def encode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self.ring.active
        cipher = self._ciphers[key_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()}, data=data))
        return encoded

    def decode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)  # written before encryption was on: readable as it is
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise CodecError(f"payload encrypted with key {key_id!r}, which this process does not hold")
            try:
                plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
            except InvalidTag:
                raise CodecError(
                    f"payload does not authenticate with key {key_id!r}: a different key under "
                    "the same id, or altered data"
                ) from None
            decoded.append(Payload.FromString(plain))
        return decoded

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_sync(payloads)
