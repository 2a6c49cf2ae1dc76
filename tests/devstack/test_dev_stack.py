"""`cidsync dev up|status|down` on real processes: up, status, a second up, down, nothing left."""

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload

from cidsync.bridge.client import BridgeClient
from cidsync.bridge.errors import RateLimited
from cidsync.config import dev_stack_endpoints
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync_tooling.audit import PERSONAL_FIELDS, Corpus, personal_values_by_kind, read_message
from cidsync_tooling.devstack.processes import temporal_binary
from tests.e2e.reconciliation import pair_entries
from tests.helpers.cli_runner import cidsync
from tests.helpers.dev_stack import stack_file


def _status(config: Path) -> dict[str, object]:
    result = cidsync("dev", "status", "--json", "--config", str(config))
    return dict(json.loads(result.stdout), exit=result.returncode)


def _group_members(pids: list[int]) -> list[psutil.Process]:
    """The processes still running in the groups of `pids`. A zombie has exited: the init process that
    inherited a server from `dev up` reaps it when it gets to it."""
    return [p for p in psutil.process_iter() if _pgid(p.pid) in pids and _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pgid(pid: int) -> int | None:
    try:
        import os

        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _eventually_ready(url: str, timeout: float = 180) -> bool:
    """Whether the role at `url` says it is ready within `timeout` (only a fault reaches it: on a busy
    machine a worker's first connections take tens of seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    return False


def _decoded_payloads(value: object) -> Iterator[dict[str, Any]]:
    """Every `{"metadata", "data"}` payload in `temporal workflow show --output json`'s history."""
    if isinstance(value, dict):
        if set(value) == {"metadata", "data"} and isinstance(value["metadata"], dict):
            yield value
        else:
            for item in value.values():
                yield from _decoded_payloads(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decoded_payloads(item)


def _payloads_are_encrypted_and_the_ui_decodes_them(tmp_path: Path, status: dict[str, object]) -> None:
    """The stack made its key (0600), the roles and the CLI encrypt with it, Temporal stores ciphertext, and
    both readers an operator has get a real reconciliation decoded: the `temporal` CLI through
    `--codec-endpoint`, and the Web UI (told where the codec server is) with the request it sends. Decoded,
    the run is readable JSON and still holds no personal value of the entries it repaired."""
    keys = tmp_path / "state" / "codec-keys"
    assert keys.stat().st_mode & 0o777 == 0o600
    ui, codec = str(status["temporal_ui"]), str(status["codec_url"])
    with urllib.request.urlopen(f"{ui}/api/v1/settings", timeout=10) as reply:
        assert json.load(reply)["Codec"]["Endpoint"] == codec
    env = {"CIDSYNC_STATE_DIR": str(tmp_path / "state")}
    only_in_dict = pair_entries("87654321", KeyType.EVP, 3, seed=27)
    entries = tmp_path / "dict-only.jsonl"
    entries.write_text("".join(e.model_dump_json() + "\n" for e in only_in_dict))
    loaded = cidsync("bridge-sim", "admin", "load", "--file", str(entries), env=env)
    assert loaded.returncode == 0, loaded.stderr
    reconciled = cidsync(
        "reconcile", "--participant", "87654321", "--key-type", "EVP", "--wait", "--grace", "1", env=env
    )
    assert reconciled.returncode == 0, reconciled.stderr
    outcome = json.loads(reconciled.stdout)  # the CLI decoded the result with the stack's key
    assert (outcome["outcome"], outcome["added"]) == ("REPAIRED", 3)

    def show(*codec_options: str) -> list[dict[str, Any]]:
        shown = subprocess.run(
            [
                str(temporal_binary()),
                "workflow",
                "show",
                "--workflow-id",
                "reconcile-87654321-EVP",
                "--address",
                str(status["temporal_address"]),
                "--output",
                "json",
                *codec_options,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return list(json.loads(shown.stdout)["events"])

    stored = show()[0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    assert base64.b64decode(stored["metadata"]["encoding"]) == b"binary/encrypted"
    assert b"87654321" not in base64.b64decode(stored["data"])

    # The CLI, through the codec server: every payload of the run (inputs, results, summaries) comes back as
    # plain JSON, the input names the pair, and no decoded byte holds an entry's personal value.
    history = show("--codec-endpoint", codec)
    payloads = list(_decoded_payloads(history))
    assert len(payloads) > 20
    assert {base64.b64decode(p["metadata"]["encoding"]) for p in payloads} == {b"json/plain"}
    texts = [base64.b64decode(p["data"]).decode() for p in payloads]
    for text in texts:
        json.loads(text)
    given = history[0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    started = json.loads(base64.b64decode(given["data"]))
    assert (started["participant"], started["key_type"]) == ("87654321", "EVP")
    summaries = [
        json.loads(base64.b64decode(e["userMetadata"]["summary"]["data"]))
        for e in history
        if "activityTaskScheduledEventAttributes" in e
    ]
    assert any("VerifySync" in s for s in summaries), summaries
    corpus = Corpus()
    for payload in payloads:
        read_message(json_format.ParseDict(payload, Payload()), "temporal workflow show --codec-endpoint", corpus)
    assert {"participant", "key_type", "added"} <= corpus.payload_fields  # the search reads the decoded fields
    assert not corpus.payload_fields & PERSONAL_FIELDS
    # Keys, tax ids and names: an account number (4 to 12 digits) cannot be told from any other number by value.
    assert corpus.leaked(set().union(*personal_values_by_kind(only_in_dict).values())) == {}

    # The Web UI's own request (2.54.1, captured from Chromium): its preflight, then the decode with the
    # query string and headers it adds.
    asks = {
        "Origin": ui,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    preflight = urllib.request.Request(f"{codec}/decode?preserveStorageRefs=true", method="OPTIONS", headers=asks)
    with urllib.request.urlopen(preflight, timeout=10) as reply:
        assert (reply.status, reply.headers["Access-Control-Allow-Origin"]) == (204, ui)
    request = urllib.request.Request(
        f"{codec}/decode?preserveStorageRefs=true",
        data=json.dumps({"payloads": [stored]}).encode(),
        headers={"Origin": ui, "Content-Type": "application/json", "X-Namespace": "default", "Referer": f"{ui}/"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Access-Control-Allow-Origin"] == ui
        decoded = json.load(reply)["payloads"][0]
    assert b'"participant":"87654321"' in base64.b64decode(decoded["data"])


def test_up_status_up_again_down(tmp_path: Path) -> None:
    config = stack_file(tmp_path)
    first = cidsync("dev", "up", "--config", str(config))
    try:
        assert first.returncode == 0, first.stderr
        status = _status(config)
        assert status["exit"] == 0
        assert status["running"] is True
        for key in ("temporal_address", "temporal_ui", "pulsar_url", "redis_url", "bridge_address", "dict_url"):
            assert status[key], key
        services = status["services"]
        assert isinstance(services, dict)
        pids = {name: svc["pid"] for name, svc in services.items()}
        assert set(pids) == {"redis", "pulsar", "codec", "temporal", "simulator", "bridge", "worker", "starter"}
        # The workers' Bridge is bridge serve, in front of the simulator's DICT API v2.
        assert status["bridge_address"] != status["simulator_address"]
        labels = [line.split()[0] for line in first.stdout.splitlines()]
        assert labels == [
            "Temporal",
            "Web",
            "Pulsar",
            "Redis",
            "Bridge",
            "DICT",
            "Codec",
            "Worker",
            "Starter",
            "Bridge",
            "State",
            "Followers",
        ]
        assert "Followers none: no participants" in " ".join(first.stdout.split())

        # Each role serves its endpoint on the port recorded in the state, and says when it is ready.
        for role in ("worker", "starter", "bridge"):
            url = str(status[f"{role}_metrics"])
            assert f"{url}/metrics" in first.stdout
            assert _eventually_ready(url), f"{role} at {url} never became ready"

        # Every command finds the Bridge through the state file, with no configuration at all: a call
        # through bridge serve, DICT API v2 and its signatures.
        verify = cidsync(
            "bridge",
            "verify",
            "--participant",
            "12345678",
            "--key-type",
            "EVP",
            "--vsync",
            "0" * 64,
            env={"CIDSYNC_STATE_DIR": str(tmp_path / "state")},
        )
        assert (verify.returncode, verify.stdout) == (0, "OK\n"), verify.stderr

        # The endpoints are real: the UI answers and Redis has AOF on, as declared.
        ui = str(status["temporal_ui"])
        host, port = ui.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5):
            pass

        _payloads_are_encrypted_and_the_ui_decodes_them(tmp_path, status)

        # With participants, `dev up` starts a follower of DICT's event log per key type, once.
        participant = {"CIDSYNC_PARTICIPANTS": "12345678", "CIDSYNC_STATE_DIR": str(tmp_path / "state")}
        second = cidsync("dev", "up", "--config", str(config), env=participant)
        assert second.returncode == 0, second.stderr
        assert "starting" not in second.stderr
        assert "Followers 5 pairs (5 started now)" in " ".join(second.stdout.split())
        third = cidsync("dev", "up", "--config", str(config), env=participant)
        assert "Followers 5 pairs (0 started now)" in " ".join(third.stdout.split())
        for _ in range(60):  # visibility catches up within a moment
            listed = cidsync("follow", "status", "--json", env=participant)
            if len(json.loads(listed.stdout)) == 5:
                break
            time.sleep(0.5)
        assert sorted(f["key_type"] for f in json.loads(listed.stdout)) == sorted(k.value for k in KeyType)

        # The followers' gauges reach the worker's /metrics (through the SDK's metric buffer).
        def gauges(name: str, text: str) -> set[str]:
            found = re.findall(rf'^{name}{{[^}}]*key_type="(\w+)"[^}}]*}}', text, re.MULTILINE)
            lines = [line for line in text.splitlines() if line.startswith(name + "{")]
            return set(found) if all('participant="12345678"' in line for line in lines) else set()

        metrics = ""
        for _ in range(60):
            with urllib.request.urlopen(f"{status['worker_metrics']}/metrics", timeout=5) as answer:
                metrics = answer.read().decode()
            if len(gauges("cidsync_follower_read_up_to_timestamp_seconds", metrics)) == 5:
                break
            time.sleep(0.5)
        for name in ("cidsync_follower_suspects", "cidsync_follower_unexplained_mismatch"):
            assert gauges(name, metrics) == {k.value for k in KeyType}, metrics[-2000:]
        again = _status(config)["services"]
        assert isinstance(again, dict)
        assert {name: svc["pid"] for name, svc in again.items()} == pids

        _a_server_killed_under_its_clients_comes_back_on_its_own_port(config, participant)
        latest = _status(config)["services"]
        assert isinstance(latest, dict)
        pids = {name: svc["pid"] for name, svc in latest.items()}  # Redis and Pulsar were started again
    finally:
        down = cidsync("dev", "down", "--config", str(config))
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "stopped: starter, worker, bridge, simulator, temporal, codec, pulsar, redis"
    assert not _group_members(list(pids.values())), "a process of the stack outlived `dev down`"
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids.values())
    gone = _status(config)
    assert gone["exit"] == 1
    assert gone["running"] is False
    assert cidsync("dev", "down", "--config", str(config)).stdout.strip() == "nothing was running"


def test_a_taken_port_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = stack_file(tmp_path, port=port)
        result = cidsync("dev", "up", "--config", str(config))
    assert result.returncode == 1
    assert f"redis port {port} is taken by" in result.stderr
    assert "starting" not in result.stderr
    assert not (tmp_path / "state" / "state.json").exists()


def test_an_invalid_stack_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("redis:\n  port: -1\n  colour: blue\n")
    result = cidsync("dev", "up", "--config", str(config))
    assert result.returncode == 2
    assert "bad.yaml.redis.port" in result.stderr
    assert "bad.yaml.redis.colour: Extra inputs are not permitted" in result.stderr


@pytest.mark.parametrize("action", ["up", "down"])
def test_missing_stack_file_is_reported(tmp_path: Path, action: str) -> None:
    result = cidsync("dev", action, "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot be read" in result.stderr


def test_a_kept_database_gains_the_search_attributes_added_since(tmp_path: Path) -> None:
    """`start-dev --search-attribute` registers them in a new database only; an upgraded stack that kept its
    database must still get the new ones, or the starter halts on them."""
    config = stack_file(tmp_path)
    spec = yaml.safe_load(config.read_text())
    spec["temporal"]["db_filename"] = str(tmp_path / "temporal.db")
    everything = dict(spec["temporal"]["search_attributes"])
    spec["temporal"]["search_attributes"] = {"CidParticipant": "Keyword"}  # an older version of the stack
    for name in ("worker", "starter", "codec"):
        spec[name] = {"enabled": False}
    config.write_text(yaml.safe_dump(spec))
    assert cidsync("dev", "up", "--config", str(config)).returncode == 0
    assert cidsync("dev", "down", "--config", str(config)).returncode == 0
    spec["temporal"]["search_attributes"] = everything
    config.write_text(yaml.safe_dump(spec))
    try:
        again = cidsync("dev", "up", "--config", str(config))
        assert again.returncode == 0, again.stderr
        listed = subprocess.run(
            [
                str(temporal_binary()),
                "operator",
                "search-attribute",
                "list",
                "--address",
                str(_status(config)["temporal_address"]),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert everything.keys() <= json.loads(listed.stdout)["customAttributes"].keys()
    finally:
        cidsync("dev", "down", "--config", str(config))


async def _until_dict_agrees(env: dict[str, str], participant: str) -> None:
    """Until DICT answers OK to the local VSync of every key type of `participant` on the stack of `env`.
    DICT allows 10 VerifySync a minute per participant: asked only once the local VSyncs have stood still
    for 3 s (the stack has applied what was published), and again only after they change or a refusal's
    retry-after."""
    endpoints = dev_stack_endpoints(env)
    store = CIDStore(redis_client(str(endpoints["redis_url"])), b"unused")
    deadline = time.monotonic() + 90
    try:
        async with BridgeClient(str(endpoints["bridge_address"])) as bridge:
            asked: list[str] | None = None
            last, still_since = None, time.monotonic()
            while time.monotonic() < deadline:
                local = [await store.view.vsync(participant, k) for k in KeyType]
                if local != last:
                    last, still_since = local, time.monotonic()
                elif local != asked and time.monotonic() - still_since >= 3:
                    try:
                        verdicts = [
                            (await bridge.verify_sync(participant, k, v)).ok
                            for k, v in zip(KeyType, local, strict=True)
                        ]
                    except RateLimited as refused:
                        await asyncio.sleep(refused.retry_after or 6)
                        continue
                    if all(verdicts):
                        return
                    asked = local
                await asyncio.sleep(0.5)
    finally:
        await store.close()
    raise AssertionError(f"DICT did not agree with every local VSync of {participant} within 90 s")


def test_a_restarted_stack_keeps_its_dict_and_publishing_tells_dict_first(tmp_path: Path) -> None:
    """The dev stack keeps DICT as it keeps the CID store: a new user who publishes, restarts the stack and
    verifies must find both still in step, not a DICT that came back empty."""
    config = stack_file(tmp_path)
    spec = yaml.safe_load(config.read_text())
    spec["simulator"]["data_dir"] = str(tmp_path / "dict")
    spec["codec"] = {"enabled": False}
    config.write_text(yaml.safe_dump(spec))
    env = {"CIDSYNC_STATE_DIR": str(tmp_path / "state")}
    participant = "12345678"
    # 50 events: every key type gets entries (the history creates them in turn), and the point is what a
    # restart keeps, not volume (300 made this the suite's longest test: 51 CPU-s alone, 50 events 40).
    count = 50
    assert cidsync("dev", "up", "--config", str(config)).returncode == 0
    try:
        published = cidsync("publish", "--generate", str(count), "--participants", participant, "--seed", "3", env=env)
        assert published.returncode == 0, published.stderr
        told = re.search(
            r"DICT first \(127\.0\.0\.1:\d+\): (\d+) applied, 0 already there \(repeats\), (\d+) left "
            r"to their waiting period, 0 refused",
            published.stdout,
        )
        assert told, published.stdout
        assert int(told[1]) + int(told[2]) == count
        assert f"sent {count}, failed 0" in published.stdout

        def verdicts() -> dict[str, str]:
            """DICT's verdict on the local VSync of each key type, once the stack has applied every event."""
            local = json.loads(cidsync("vsync", "--participant", participant, "--json", env=env).stdout)
            found = {}
            for pair in local:
                verify = cidsync(
                    "bridge",
                    "verify",
                    "--participant",
                    participant,
                    "--key-type",
                    pair["key_type"],
                    "--vsync",
                    pair["vsync"],
                    env=env,
                )
                found[pair["key_type"]] = verify.stdout.strip()
            return found

        everything_ok = dict.fromkeys((k.value for k in KeyType), "OK")
        # Waited for in this process (six commands a look cost more CPU than the rest of the test), then
        # asserted through the commands a user runs.
        asyncio.run(_until_dict_agrees(env, participant))
        assert verdicts() == everything_ok
        before = json.loads(cidsync("bridge-sim", "admin", "stats", "--json", env=env).stdout)["entries"]
        assert before > 0

        assert cidsync("dev", "down", "--config", str(config)).returncode == 0
        assert cidsync("dev", "up", "--config", str(config)).returncode == 0
        assert json.loads(cidsync("bridge-sim", "admin", "stats", "--json", env=env).stdout)["entries"] == before
        assert verdicts() == everything_ok
        assert "DICT kept in" in (tmp_path / "state" / "logs" / "simulator.log").read_text()

        again = cidsync("publish", "--generate", str(count), "--participants", participant, "--seed", "3", env=env)
        assert again.returncode == 1
        assert "DICT already holds entries of this history" in again.stderr
        assert "DICT refused it, not published" in again.stderr
    finally:
        cidsync("dev", "down", "--config", str(config))


def _a_server_killed_under_its_clients_comes_back_on_its_own_port(config: Path, env: dict[str, str]) -> None:
    """A SIGKILLed server leaves its clients' connections in TIME_WAIT on its port; `dev up` must still
    start it there, or every client that read the state file keeps calling a port nobody listens on. (On
    the stack of `test_up_status_up_again_down`: a stack of its own cost 15 machine CPU-s.)"""
    before = _status(config)
    assert _eventually_ready(str(before["worker_metrics"]))  # the worker holds connections to both
    services = before["services"]
    assert isinstance(services, dict)
    for name in ("redis", "pulsar"):
        os.killpg(services[name]["pid"], signal.SIGKILL)
    again = cidsync("dev", "up", "--config", str(config), env=env)
    assert again.returncode == 0, again.stderr
    after = _status(config)
    assert after["running"] is True
    assert (after["redis_url"], after["pulsar_url"]) == (before["redis_url"], before["pulsar_url"])
    assert _eventually_ready(str(after["worker_metrics"])), "the worker never found its servers again"

    # An `up` that fails (here: someone else took the port meanwhile) must not forget the dead one's
    # port: the next `up` starts it there again.
    redis_port = int(str(after["redis_url"]).rsplit(":", 1)[1].split("/")[0])
    redis_pid = after["services"]["redis"]["pid"]  # type: ignore[index]
    os.killpg(redis_pid, signal.SIGKILL)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):  # until the killed server's listening socket is gone
            with contextlib.suppress(OSError):
                squatter.bind(("127.0.0.1", redis_port))
                break
            time.sleep(0.1)
        squatter.listen()
        refused = cidsync("dev", "up", "--config", str(config), env=env)
        assert refused.returncode != 0
        assert f"redis port {redis_port} is taken" in refused.stderr
    assert cidsync("dev", "up", "--config", str(config), env=env).returncode == 0
    assert _status(config)["redis_url"] == after["redis_url"]
