"""`cidsync bridge ...` and `cidsync bridge-sim admin ...` against the running simulator."""

import json
import random
from pathlib import Path

from cidsync.cid import cid, vsync
from cidsync.entry import KeyType
from cidsync_tooling.synthetic import pair_random, synthetic_entry
from tests.helpers.cli_runner import cidsync
from tests.helpers.servers import BridgeChain, BridgeSimulator


def test_load_verify_cids_and_stats(
    bridge_simulator: BridgeSimulator, bridge_chain: BridgeChain, participant: str, tmp_path: Path
) -> None:
    """Entries loaded into the simulator, then verified and listed through `bridge serve` and DICT API v2."""
    admin = ["--simulator-address", bridge_simulator.address]
    address = ["--bridge-address", bridge_chain.address]
    rng = random.Random(participant)
    entries = [synthetic_entry(rng, participant, KeyType.CPF) for _ in range(12)]
    seed = tmp_path / "entries.jsonl"
    seed.write_text("".join(e.model_dump_json() + "\n" for e in entries), encoding="utf-8")

    loaded = cidsync("bridge-sim", "admin", "load", "--file", str(seed), *admin)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "loaded 12 entries"), loaded.stderr

    pair = ["--participant", participant, "--key-type", "CPF"]
    ok = cidsync("bridge", "verify", *pair, "--vsync", vsync(cid(e) for e in entries), *address)
    assert (ok.returncode, ok.stdout) == (0, "OK\n"), ok.stderr
    nok = cidsync("bridge", "verify", *pair, "--vsync", "0" * 64, *address)
    assert (nok.returncode, nok.stdout) == (0, "NOK\n")

    listed = cidsync("bridge", "cids", *pair, "--poll-interval", "0.1", *address)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == sorted(cid(e) for e in entries)
    assert "12 CIDs, SHA-256" in listed.stderr

    stats = cidsync("bridge-sim", "admin", "stats", "--json", *admin)
    counters = json.loads(stats.stdout)
    assert counters["calls"]["VerifySync"] >= 2
    assert counters["calls"]["CreateCidSetFile"] >= 1


def test_invalid_input_exits_2_before_any_call(bridge_simulator: BridgeSimulator) -> None:
    address = ["--bridge-address", bridge_simulator.address]
    bad = cidsync("bridge", "verify", "--participant", "1", "--key-type", "CPF", "--vsync", "0" * 64, *address)
    assert bad.returncode == 2
    assert "--participant: a participant (ISPB) must be exactly 8 digits" in bad.stderr
    bad = cidsync("bridge", "verify", "--participant", "12345678", "--key-type", "CPF", "--vsync", "zz", *address)
    assert bad.returncode == 2
    assert "64 lowercase hexadecimal" in bad.stderr


def test_no_bridge_configured_is_a_clear_error(tmp_path: Path) -> None:
    result = cidsync(
        "bridge",
        "verify",
        "--participant",
        "12345678",
        "--key-type",
        "CPF",
        "--vsync",
        "0" * 64,
        env={"CIDSYNC_STATE_DIR": str(tmp_path), "CIDSYNC_BRIDGE_ADDRESS": ""},
    )
    assert result.returncode == 1
    assert "no bridge address: set CIDSYNC_BRIDGE_ADDRESS" in result.stderr


def test_no_simulator_configured_is_a_clear_error(tmp_path: Path) -> None:
    result = cidsync(
        "bridge-sim", "admin", "stats", env={"CIDSYNC_STATE_DIR": str(tmp_path), "CIDSYNC_SIMULATOR_ADDRESS": ""}
    )
    assert result.returncode == 1
    assert "no simulator address: set CIDSYNC_SIMULATOR_ADDRESS, pass --simulator-address" in result.stderr


def test_unreachable_bridge_fails_with_exit_1(participant: str) -> None:
    from cidsync_tooling.devstack.processes import free_port

    result = cidsync(
        "bridge",
        "verify",
        "--participant",
        participant,
        "--key-type",
        "CPF",
        "--vsync",
        "0" * 64,
        "--bridge-address",
        f"127.0.0.1:{free_port()}",
        timeout=120,
    )
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_synthetic_load_matches_the_library_generator(bridge_simulator: BridgeSimulator, participant: str) -> None:
    address = ["--simulator-address", bridge_simulator.address]
    loaded = cidsync(
        "bridge-sim",
        "admin",
        "load",
        "--synthetic",
        "50",
        "--participant",
        participant,
        "--key-type",
        "EVP",
        "--seed",
        "9",
        *address,
    )
    assert loaded.returncode == 0, loaded.stderr
    rng = pair_random(participant, KeyType.EVP, 9)
    expected = vsync(cid(synthetic_entry(rng, participant, KeyType.EVP)) for _ in range(50))
    assert loaded.stdout.strip() == f"loaded 50 synthetic entries; the pair's VSync is now {expected}"
    incomplete = cidsync("bridge-sim", "admin", "load", "--synthetic", "5", *address)
    assert incomplete.returncode == 2
    assert "--participant and --key-type" in incomplete.stderr
