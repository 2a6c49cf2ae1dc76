"""`cidsync bridge dict-check`: the CIDSYNC_DICT_* settings checked against DICT API v2 (the simulator's,
in its own process) before `bridge serve` relies on them."""

from __future__ import annotations

from pathlib import Path

from tests.dict_api.conftest import DictApiSimulator
from tests.helpers.cli_runner import cidsync


def dict_env(sim: DictApiSimulator, **changes: str) -> dict[str, str]:
    return {**sim.pki.connector_env(sim.url), **changes}


def test_a_working_connection_shows_the_buckets_and_spends_no_token(dict_api_simulator: DictApiSimulator) -> None:
    first = cidsync("bridge", "dict-check", "--participant", "60701190", env=dict_env(dict_api_simulator))
    assert first.returncode == 0, first.stderr
    assert f"DICT at {dict_api_simulator.url}: mutual TLS established, response signature checked" in first.stdout
    again = cidsync("bridge", "dict-check", "--participant", "60701190", env=dict_env(dict_api_simulator))
    bucket = [line for line in again.stdout.splitlines() if "SYNC_VERIFICATIONS_WRITE" in line]
    assert bucket == ["  SYNC_VERIFICATIONS_WRITE       50 of 50     tokens, 10 every 60 s"]


def test_each_missing_or_unreadable_setting_is_named_on_its_own_line_exit_2(
    dict_api_simulator: DictApiSimulator, tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    env = dict_env(
        dict_api_simulator,
        CIDSYNC_DICT_URL="http://dict.example/api/v2/",
        CIDSYNC_DICT_CLIENT_KEY=str(tmp_path / "missing.key"),
        CIDSYNC_DICT_CA=str(not_pem),
    )
    env["CIDSYNC_DICT_SIGNER_CERT"] = ""
    result = cidsync("bridge", "dict-check", "--participant", "60701190", env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "invalid DICT settings:"
    assert sorted(lines[1:]) == sorted(
        [
            f"  CIDSYNC_DICT_CLIENT_KEY: cannot read {tmp_path / 'missing.key'}: No such file or directory",
            f"  CIDSYNC_DICT_CA: {not_pem} holds no PEM certificates",
            "  CIDSYNC_DICT_SIGNER_CERT: is required (or --dict-signer-cert)",
            "  CIDSYNC_DICT_URL: must be an https:// URL (DICT is mutual TLS only)",
        ]
    )


def test_a_client_certificate_dict_does_not_accept_is_said_in_one_line_exit_1(
    dict_api_simulator: DictApiSimulator,
) -> None:
    pki = dict_api_simulator.pki
    env = dict_env(
        dict_api_simulator,
        CIDSYNC_DICT_CLIENT_CERT=str(pki.stranger_cert),
        CIDSYNC_DICT_CLIENT_KEY=str(pki.stranger_key),
    )
    result = cidsync("bridge", "dict-check", "--participant", "60701190", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"cidsync: DICT at {dict_api_simulator.url} closed the connection without")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_response_signed_by_a_certificate_outside_the_bundle_is_refused(
    dict_api_simulator: DictApiSimulator,
) -> None:
    pki = dict_api_simulator.pki
    env = dict_env(dict_api_simulator, CIDSYNC_DICT_SIGNER_CERT=str(pki.participant_cert))
    result = cidsync("bridge", "dict-check", "--participant", "60701190", env=env)
    assert result.returncode == 1
    assert "DICT's response refused: signed by a certificate not in the signer bundle" in result.stderr
