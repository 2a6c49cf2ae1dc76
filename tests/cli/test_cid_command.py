"""`cidsync cid` and `cidsync --help`, through the installed console script."""

import json
from pathlib import Path

from cidsync_tooling.demo import sample_entries
from tests.domain.test_entry_validation import VALID
from tests.helpers.cli_runner import cidsync

EXPECTED = "fb0aef52297ad704c38ed69ea9a4d8be0b88c3f72a0c56b4048cfa684bf92fc0"  # own vector, test_cid.py


def test_prints_the_cid_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(VALID), encoding="utf-8")
    result = cidsync("cid", "--entry", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, EXPECTED + "\n", "")


def test_reads_stdin() -> None:
    result = cidsync("cid", "--entry", "-", stdin=json.dumps(VALID))
    assert (result.returncode, result.stdout.strip()) == (0, EXPECTED)


def test_invalid_entry_lists_every_bad_field_and_exits_2() -> None:
    result = cidsync("cid", "--entry", "-", stdin=json.dumps(VALID | {"participant": "1", "branch": "12345"}))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "invalid entry:",
        "  entry.participant: a participant (ISPB) must be exactly 8 digits",
        "  entry.branch: a branch must be 1 to 4 digits (null when there is none)",
    ]


def test_malformed_json_exits_2() -> None:
    result = cidsync("cid", "--entry", "-", stdin="{nope")
    assert result.returncode == 2
    assert "entry: Invalid JSON" in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = cidsync("cid", "--entry", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert "cannot be read: No such file or directory" in result.stderr


def test_usage_error_exits_2() -> None:
    result = cidsync("cid")
    assert result.returncode == 2
    assert "--entry" in result.stderr


def test_help_lists_every_command_with_one_line() -> None:
    result = cidsync("--help")
    assert result.returncode == 0
    for command in ("cid", "dev", "demo"):
        assert any(line.strip().startswith(command + " ") for line in result.stdout.splitlines()), command


def test_bundled_sample_is_valid_and_covers_every_key_type() -> None:
    entries = sample_entries()
    assert {e.key_type.value for e in entries} == {"CPF", "CNPJ", "PHONE", "EMAIL", "EVP"}
    assert len({e.id for e in entries}) == len(entries)
