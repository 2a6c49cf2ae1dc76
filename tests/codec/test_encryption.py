"""The AES-256-GCM payload codec: round trip, key ids, rotation, and every way a decode must fail."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from cidsync.codec.encryption import ENCODING, KEY_ID_METADATA, CodecError, EncryptionCodec, KeyRing, new_key
from cidsync.errors import InvalidInput

K1, K2 = new_key(), new_key()


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


def ring(text: str, active: str | None = None) -> KeyRing:
    return KeyRing.parse(text, "CIDSYNC_CODEC_KEYS", active)


async def test_a_payload_round_trips_and_is_ciphertext_at_rest() -> None:
    codec = EncryptionCodec(ring(f"k1={K1}"))
    original = payload('{"entry_id": "0b7c9a4e", "key_id": "5f1e"}')
    [encoded] = await codec.encode([original])
    assert encoded.metadata["encoding"] == ENCODING
    assert encoded.metadata[KEY_ID_METADATA] == b"k1"
    assert b"entry_id" not in encoded.data
    assert await codec.decode([encoded]) == [original]
    [again] = await codec.encode([original])
    assert again.data != encoded.data  # a fresh nonce each time: equal inputs are not recognisable


async def test_after_a_rotation_old_payloads_still_decode_and_new_ones_use_the_new_key() -> None:
    before = EncryptionCodec(ring(f"k1={K1}"))
    after = EncryptionCodec(ring(f"k2={K2},k1={K1}"))  # the new key first: it is the active one
    [old] = await before.encode([payload("started before the rotation")])
    [new] = await after.encode([payload("started after")])
    assert new.metadata[KEY_ID_METADATA] == b"k2"
    assert await after.decode([old, new]) == [payload("started before the rotation"), payload("started after")]
    with pytest.raises(CodecError, match="'k2', which this process does not hold"):
        await before.decode([new])  # a worker not yet given the new key says which one it lacks


async def test_a_wrong_key_under_the_same_id_or_altered_data_fail_loudly() -> None:
    [encoded] = await EncryptionCodec(ring(f"k1={K1}")).encode([payload("secret")])
    with pytest.raises(CodecError, match="does not authenticate with key 'k1'"):
        await EncryptionCodec(ring(f"k1={K2}")).decode([encoded])
    tampered = Payload(metadata=encoded.metadata, data=encoded.data[:-1] + bytes([encoded.data[-1] ^ 1]))
    with pytest.raises(CodecError, match="does not authenticate"):
        await EncryptionCodec(ring(f"k1={K1}")).decode([tampered])


async def test_a_payload_relabelled_with_another_key_id_does_not_decode() -> None:
    both = EncryptionCodec(ring(f"k1={K1},k2={K1}"))  # even the same key bytes: the id is authenticated
    [encoded] = await both.encode([payload("secret")])
    relabelled = Payload(metadata={**encoded.metadata, KEY_ID_METADATA: b"k2"}, data=encoded.data)
    with pytest.raises(CodecError):
        await both.decode([relabelled])


async def test_payloads_written_before_encryption_was_on_pass_through() -> None:
    plain = payload("from before")
    assert await EncryptionCodec(ring(f"k1={K1}")).decode([plain]) == [plain]


def test_the_active_key_can_be_named() -> None:
    assert ring(f"k1={K1}\nk2={K2}", active="k2").active == "k2"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "names no key"),
        ("k1", "each entry is ID=BASE64KEY"),
        ("bad id=" + K1, "each entry is ID=BASE64KEY"),
        ("k1=not base64!", "key k1 is not base64"),
        ("k1=" + base64.b64encode(b"short").decode(), "key k1 must be 32 bytes (AES-256), not 5"),
        (f"k1={K1},k1={K2}", "key k1 is given twice"),
    ],
    ids=["empty", "no key", "bad id", "not base64", "short", "twice"],  # stable: the keys are random each run
)
def test_bad_keys_are_refused_naming_the_variable_and_never_the_key(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        ring(text)
    [found] = raised.value.problems
    assert found.field == "CIDSYNC_CODEC_KEYS"
    assert found.reason.startswith(problem)
    assert K1 not in str(raised.value)
    assert K2 not in str(raised.value)


def test_keys_come_from_the_environment_or_a_file_never_both(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated 2026-11\nk2={K2}\nk1={K1}\n")
    assert KeyRing.from_environment({}) is None
    assert KeyRing.from_environment({"CIDSYNC_CODEC_KEYS_FILE": str(keys)}).active == "k2"  # type: ignore[union-attr]
    assert KeyRing.from_environment({"CIDSYNC_CODEC_KEYS": f"k1={K1}"}).active == "k1"  # type: ignore[union-attr]
    for environ, variable in [
        ({"CIDSYNC_CODEC_KEYS": f"k1={K1}", "CIDSYNC_CODEC_KEYS_FILE": str(keys)}, "CIDSYNC_CODEC_KEYS"),
        ({"CIDSYNC_CODEC_KEYS_FILE": str(tmp_path / "missing")}, "CIDSYNC_CODEC_KEYS_FILE"),
        ({"CIDSYNC_CODEC_KEYS": f"k1={K1}", "CIDSYNC_CODEC_ACTIVE_KEY": "k9"}, "CIDSYNC_CODEC_ACTIVE_KEY"),
        ({"CIDSYNC_CODEC_ACTIVE_KEY": "k1"}, "CIDSYNC_CODEC_ACTIVE_KEY"),
    ]:
        with pytest.raises(InvalidInput) as raised:
            KeyRing.from_environment(environ)
        assert raised.value.problems[0].field == variable
