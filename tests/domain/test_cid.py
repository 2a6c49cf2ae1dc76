"""The CID and VSync against DICT's published vectors and our own (docs/design.md §1).

Our vectors' expected CIDs were computed by an RFC 2104 HMAC written from raw SHA-256 (see
`_rfc2104_hmac_sha256` below, which also reproduces the BCB vector), not by the code under test.
"""

import hashlib
import uuid
from typing import Any

import pytest

from cidsync.cid import (
    ZERO_VSYNC,
    cid,
    cid_attributes,
    cid_of_attributes,
    vsync,
    vsync_add,
    vsync_remove,
    vsync_replace,
)
from cidsync.entry import Entry
from cidsync.errors import InvalidInput

BCB_REQUEST_ID = uuid.UUID("01020304-0506-0708-090a-0b0c0d0e0f10")
BCB_ATTRIBUTES = "PHONE&+5511987654321&11122233300&João Silva&&12345678&00001&0007654321&CACC"
BCB_CID = "28c06eb41c4dc9c3ae114831efcac7446c8747777fca8b145ecd31ff8480ae88"
# The other two CIDs of the DICT API spec's VSync example ("Cálculo do VSync").
BCB_VSYNC_CIDS = [
    BCB_CID,
    "4d4abb9168114e349672b934d16ed201a919cb49e28b7f66a240e62c92ee007f",
    "fce514f84f37934bc8aa0f861e4f7392273d71b9d18e8209d21e4192a7842058",
]
BCB_VSYNC = "996fc1dd3b6b14bcf0c9fe8320eb66d7e2a3fd874ccf767b2e939641b1ea8eaf"


def _rfc2104_hmac_sha256(key: bytes, message: bytes) -> str:
    block = key.ljust(64, b"\0")
    outer = bytes(b ^ 0x5C for b in block)
    inner = bytes(b ^ 0x36 for b in block)
    return hashlib.sha256(outer + hashlib.sha256(inner + message).digest()).hexdigest()


def test_bcb_published_cid() -> None:
    assert cid_of_attributes(BCB_ATTRIBUTES, BCB_REQUEST_ID) == BCB_CID


def test_independent_hmac_reproduces_the_bcb_vector() -> None:
    # Validates the oracle our own vectors were computed with.
    assert _rfc2104_hmac_sha256(BCB_REQUEST_ID.bytes, BCB_ATTRIBUTES.encode()) == BCB_CID


def test_bcb_published_vsync() -> None:
    assert vsync(BCB_VSYNC_CIDS) == BCB_VSYNC


def _entry(**fields: Any) -> Entry:
    base: dict[str, Any] = {
        "id": "3f9a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c",
        "account_opened_at": "2020-01-01T00:00:00Z",
        "branch": None,
        "owner_trade_name": None,
    }
    return Entry.model_validate(base | fields)


OWN_VECTORS = [
    pytest.param(
        _entry(
            request_id="6f2a1c4e-8b3d-4f5a-9c7e-1d2b3a4c5e6f",
            key_type="CPF",
            key="12345678909",
            participant="60701190",
            branch="0001",
            account_number="0012345678",
            account_type="CACC",
            owner_type="NATURAL_PERSON",
            owner_name="Maria Conceição",
            owner_tax_id="12345678909",
        ),
        "CPF&12345678909&12345678909&Maria Conceição&&60701190&0001&0012345678&CACC",
        "fb0aef52297ad704c38ed69ea9a4d8be0b88c3f72a0c56b4048cfa684bf92fc0",
        id="cpf-non-ascii-name",
    ),
    pytest.param(
        _entry(
            request_id="0d7f6e5c-4b3a-4291-8807-f6e5d4c3b2a1",
            key_type="CNPJ",
            key="11222333000181",
            participant="60746948",
            branch="1234",
            account_number="99887766",
            account_type="SVGS",
            owner_type="LEGAL_PERSON",
            owner_name="Padaria Pão Doce Ltda",
            owner_trade_name="Pão Doce",
            owner_tax_id="11222333000181",
        ),
        "CNPJ&11222333000181&11222333000181&Padaria Pão Doce Ltda&Pão Doce&60746948&1234&99887766&SVGS",
        "cd1eebe34eeb20778cccf88bdea6c7c1a72810daf8b7e0fb4760605112cf0ff2",
        id="cnpj-legal-person-with-trade-name",
    ),
    pytest.param(
        _entry(
            request_id="ffffffff-ffff-4fff-bfff-ffffffffffff",
            key_type="PHONE",
            key="+5561998765432",
            participant="00000000",
            account_number="123",
            account_type="SLRY",
            owner_type="NATURAL_PERSON",
            owner_name="José Araújo",
            owner_tax_id="98765432100",
        ),
        "PHONE&+5561998765432&98765432100&José Araújo&&00000000&&123&SLRY",
        "c6b14ba676bba6426085973b248d24e5afdea625ca468a826a4da2692c96761b",
        id="phone-no-branch",
    ),
    pytest.param(
        _entry(
            request_id="00000000-0000-4000-8000-000000000001",
            key_type="EMAIL",
            key="ana.souza@exemplo.com.br",
            participant="18236120",
            branch="9",
            account_number="1",
            account_type="TRAN",
            owner_type="NATURAL_PERSON",
            owner_name="Ana Souza",
            owner_tax_id="11144477735",
        ),
        "EMAIL&ana.souza@exemplo.com.br&11144477735&Ana Souza&&18236120&9&1&TRAN",
        "b7fcd1de9146b2fe625da6f0a3fb8d1f93ea35f32ec5b3d1652d99100c6b9f38",
        id="email",
    ),
    pytest.param(
        _entry(
            request_id="a1b2c3d4-e5f6-4718-9a0b-c1d2e3f4a5b6",
            key_type="EVP",
            key="2f1d9a3c-5b7e-4c8d-9e0f-a1b2c3d4e5f6",
            participant="90400888",
            branch="0042",
            account_number="00000000000000000001",
            account_type="CACC",
            owner_type="LEGAL_PERSON",
            owner_name="Comércio & Filhos S.A.",
            owner_tax_id="44555666000177",
        ),
        # '&' inside a name is hashed as it is: DICT defines no escaping.
        "EVP&2f1d9a3c-5b7e-4c8d-9e0f-a1b2c3d4e5f6&44555666000177&Comércio & Filhos S.A.&&90400888&0042"
        "&00000000000000000001&CACC",
        "b44cbf0b1c32352067ee23d2f41733fe0b210445c4d7d0a2df24dca12790099b",
        id="evp-legal-person-without-trade-name-ampersand-in-name",
    ),
]


@pytest.mark.parametrize(("entry", "attributes", "expected"), OWN_VECTORS)
def test_own_vectors(entry: Entry, attributes: str, expected: str) -> None:
    assert cid_attributes(entry) == attributes
    assert cid(entry) == expected
    assert _rfc2104_hmac_sha256(entry.request_id.bytes, attributes.encode()) == expected


def test_fields_outside_the_cid_do_not_change_it() -> None:
    entry = OWN_VECTORS[0].values[0]
    assert isinstance(entry, Entry)
    moved = entry.model_copy(
        update={"account_opened_at": entry.account_opened_at.replace(year=1999), "id": uuid.uuid4()}
    )
    assert cid(moved) == cid(entry)


def test_request_id_is_the_hmac_key() -> None:
    entry = OWN_VECTORS[0].values[0]
    assert isinstance(entry, Entry)
    other = uuid.UUID("6f2a1c4e-8b3d-4f5a-9c7e-1d2b3a4c5e70")
    assert cid(entry, other) == cid_of_attributes(cid_attributes(entry), other) != cid(entry)


def test_empty_vsync_is_64_zeros() -> None:
    assert vsync([]) == ZERO_VSYNC == "0" * 64


def test_vsync_keeps_leading_zeros() -> None:
    low = "0" * 63 + "1"
    assert vsync([low]) == low
    assert vsync([BCB_CID, BCB_CID]) == ZERO_VSYNC


def test_incremental_helpers_match_the_published_vsync() -> None:
    value = ZERO_VSYNC
    for c in BCB_VSYNC_CIDS:
        value = vsync_add(value, c)
    assert value == BCB_VSYNC
    assert vsync_remove(value, BCB_VSYNC_CIDS[1]) == vsync([BCB_VSYNC_CIDS[0], BCB_VSYNC_CIDS[2]])
    replaced = vsync_replace(value, BCB_VSYNC_CIDS[2], "f" * 64)
    assert replaced == vsync([*BCB_VSYNC_CIDS[:2], "f" * 64])


@pytest.mark.parametrize("bad", ["", "abc", BCB_CID.upper(), BCB_CID + "0", "g" * 64])
def test_vsync_rejects_what_is_not_a_cid(bad: str) -> None:
    with pytest.raises(InvalidInput, match="64 lowercase hexadecimal digits"):
        vsync([bad])
