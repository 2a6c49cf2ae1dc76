"""DICT's entry rules (docs/design.md §1): one rejected example per rule, with the message checked."""

from typing import Any

import pytest

from cidsync.entry import Entry, parse_entry
from cidsync.errors import InvalidInput

VALID: dict[str, Any] = {
    "id": "3f9a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c",
    "request_id": "6f2a1c4e-8b3d-4f5a-9c7e-1d2b3a4c5e6f",
    "key_type": "CPF",
    "key": "12345678909",
    "participant": "60701190",
    "branch": "0001",
    "account_number": "0012345678",
    "account_type": "CACC",
    "account_opened_at": "2020-01-01T00:00:00Z",
    "owner_type": "NATURAL_PERSON",
    "owner_name": "Maria Conceição",
    "owner_trade_name": None,
    "owner_tax_id": "12345678909",
}
LEGAL = VALID | {
    "owner_type": "LEGAL_PERSON",
    "owner_tax_id": "11222333000181",
    "key_type": "CNPJ",
    "key": "11222333000181",
}


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        parse_entry(data)
    return {p.field: p.reason for p in caught.value.problems}


def test_valid_examples_pass() -> None:
    assert isinstance(parse_entry(VALID), Entry)
    assert parse_entry(LEGAL | {"owner_trade_name": "Pão Doce", "branch": None}).branch is None


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"key": "1234567890"}, "key", "a CPF key must be exactly 11 digits"),
        ({"key": "123.456.789-09"}, "key", "a CPF key must be exactly 11 digits"),
        ({"key_type": "CNPJ", "key": "1122233300018"}, "key", "a CNPJ key must be exactly 14 digits"),
        ({"key_type": "PHONE", "key": "5561998765432"}, "key", "a PHONE key must be E.164"),
        ({"key_type": "PHONE", "key": "+0561998765432"}, "key", "a PHONE key must be E.164"),
        ({"key_type": "PHONE", "key": "+1234567890123456"}, "key", "a PHONE key must be E.164"),
        ({"key_type": "EMAIL", "key": "Ana@exemplo.com"}, "key", "lower-case address"),
        ({"key_type": "EMAIL", "key": "ana.exemplo.com"}, "key", "lower-case address"),
        ({"key_type": "EMAIL", "key": "a" * 66 + "@exemplo.com"}, "key", "at most 77 characters"),
        ({"key_type": "EVP", "key": "2F1D9A3C-5B7E-4C8D-9E0F-A1B2C3D4E5F6"}, "key", "lower-case UUID"),
        ({"key_type": "EVP", "key": "2f1d9a3c5b7e4c8d9e0fa1b2c3d4e5f6"}, "key", "UUID with hyphens"),
        ({"key_type": "IBAN"}, "key_type", "Input should be 'CPF', 'CNPJ', 'PHONE', 'EMAIL' or 'EVP'"),
        ({"participant": "6070119"}, "participant", "a participant (ISPB) must be exactly 8 digits"),
        ({"branch": "00001"}, "branch", "a branch must be 1 to 4 digits"),
        ({"branch": ""}, "branch", "a branch must be 1 to 4 digits (null when there is none)"),
        ({"account_number": "12-3"}, "account_number", "an account number must be 1 to 20 digits"),
        ({"account_number": "1" * 21}, "account_number", "an account number must be 1 to 20 digits"),
        ({"account_type": "CHECKING"}, "account_type", "Input should be 'CACC', 'SVGS', 'SLRY' or 'TRAN'"),
        ({"owner_type": "PERSON"}, "owner_type", "Input should be 'NATURAL_PERSON' or 'LEGAL_PERSON'"),
        (
            {"owner_tax_id": "11222333000181"},
            "owner_tax_id",
            "a NATURAL_PERSON owner's tax id must be exactly 11 digits (CPF)",
        ),
        ({"owner_trade_name": "Loja"}, "owner_trade_name", "only a LEGAL_PERSON owner has a trade name"),
        ({"owner_name": ""}, "owner_name", "String should have at least 1 character"),
        ({"account_opened_at": "2020-01-01T00:00:00"}, "account_opened_at", "timezone"),
        ({"request_id": "not-a-uuid"}, "request_id", "valid UUID"),
        ({"id": 42}, "id", "UUID"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_each_rule_rejects_with_a_clear_message(changes: dict[str, Any], field: str, message: str) -> None:
    found = problems(VALID | changes)
    assert message in found[f"entry.{field}"]


def test_legal_person_tax_id_is_14_digits() -> None:
    found = problems(LEGAL | {"owner_tax_id": "12345678909"})
    assert found["entry.owner_tax_id"] == "a LEGAL_PERSON owner's tax id must be exactly 14 digits (CNPJ)"


def test_missing_fields_are_named() -> None:
    data = dict(VALID)
    del data["key"], data["owner_tax_id"]
    assert problems(data) == {"entry.key": "Field required", "entry.owner_tax_id": "Field required"}


def test_every_bad_field_is_reported_at_once() -> None:
    found = problems(VALID | {"key": "x", "participant": "1", "account_type": "X", "branch": "12345"})
    assert set(found) == {"entry.key", "entry.participant", "entry.account_type", "entry.branch"}


def test_nothing_is_normalised() -> None:
    # An upper-case e-mail is an error, never lowered: the lowered key would hash to another CID.
    assert "entry.key" in problems(VALID | {"key_type": "EMAIL", "key": "ANA@EXEMPLO.COM"})
    assert "entry.owner_name" not in problems(VALID | {"owner_name": " padded ", "key": "bad"})
    assert parse_entry(VALID | {"owner_name": " padded "}).owner_name == " padded "


def test_messages_never_echo_personal_data() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_entry(VALID | {"key": "9999999999", "owner_tax_id": "888"})
    assert "9999999999" not in caught.value.report()
    assert "888" not in caught.value.report()


def test_report_lists_one_problem_per_line() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_entry(VALID | {"participant": "1", "branch": "12345"})
    assert caught.value.report().splitlines() == [
        "invalid entry:",
        "  entry.participant: a participant (ISPB) must be exactly 8 digits",
        "  entry.branch: a branch must be 1 to 4 digits (null when there is none)",
    ]
