"""How each embedded server is launched, and how we know it is ready (facts in docs/stack.md)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cidsync.config import DEVELOPMENT_KEY_SECRET, ENVIRONMENT
from cidsync_tooling.devstack.pki import DictPki
from cidsync_tooling.devstack.processes import (
    Launched,
    accepts_connections,
    launch,
    pulsar_binary,
    redis_binary,
    temporal_binary,
)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(*, port: int, data_dir: Path, appendonly: bool, log: Path, cluster: bool = False) -> Launched:
    """A redis-server on 127.0.0.1 only; AOF for the dev stack, nothing on disk for tests. With `cluster`,
    a node of a Redis Cluster (its node file in `data_dir`), to be joined by `form_cluster`; restarted on
    the same port and directory, it rejoins with its slots."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(redis_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--daemonize",
        "no",
    ]
    if cluster:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]
    return launch("redis", argv, log=log, ready=lambda: redis_answers(port))


def form_cluster(ports: Sequence[int], timeout: float = 30.0) -> None:
    """Make the nodes on `ports` one Redis Cluster of primaries (slots split evenly, no replicas), with
    redis-cli beside redis-server, and wait until every node says the cluster is ok."""
    cli = redis_binary().with_name("redis-cli")
    nodes = [f"127.0.0.1:{port}" for port in ports]
    subprocess.run(
        [str(cli), "--cluster", "create", *nodes, "--cluster-yes"], check=True, capture_output=True, timeout=timeout
    )
    deadline = time.monotonic() + timeout
    while not all(cluster_ok(port) for port in ports):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Redis Cluster on {', '.join(nodes)} was not ok within {timeout:.0f} s")
        time.sleep(0.1)


def cluster_ok(port: int) -> bool:
    """Whether the node on `port` sees its cluster's every slot served (`cluster_state:ok`)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False


def start_pulsar(*, port: int, metrics_port: int, data_dir: Path, log: Path) -> Launched:
    """A pulsar-lite broker with its own config file.

    The broker's metrics server binds 0.0.0.0:8080 unless told otherwise, so every instance gets its
    own loopback metrics address, or two instances (or anything else on 8080) collide (docs/stack.md).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "pulsar-lite.toml"
    config.write_text(f'[metrics]\nenabled = true\naddr = "127.0.0.1:{metrics_port}"\n')
    argv = [
        str(pulsar_binary()),
        "--addr",
        f"127.0.0.1:{port}",
        "--db-path",
        str(data_dir / "db"),
        "--config",
        str(config),
        "--log-level",
        "warn",
    ]
    return launch("pulsar", argv, log=log, ready=lambda: accepts_connections(port), cwd=data_dir)


def dynamic_config_argv(dynamic_config: Mapping[str, object]) -> list[str]:
    """The dev server's `--dynamic-config-value` flags, each value as JSON (a duration is a string)."""
    return [
        flag
        for key, value in dynamic_config.items()
        for flag in ("--dynamic-config-value", f"{key}={json.dumps(value)}")
    ]


def temporal_argv(
    *,
    port: int,
    ui_port: int | None,
    namespace: str,
    db_filename: Path | None,
    log_level: str,
    dynamic_config: Mapping[str, object],
    search_attributes: Mapping[str, str],
    sqlite_pragmas: Mapping[str, str] | None = None,
    ui_codec_endpoint: str | None = None,
) -> list[str]:
    argv = [str(temporal_binary()), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--headless"] if ui_port is None else ["--ui-port", str(ui_port)]
    if ui_port is not None and ui_codec_endpoint is not None:
        argv += ["--ui-codec-endpoint", ui_codec_endpoint]  # the UI decodes through our codec server
    argv += ["--log-level", log_level]
    if namespace != "default":
        argv += ["--namespace", namespace]
    if db_filename is not None:
        db_filename.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--db-filename", str(db_filename)]
        for pragma, setting in (sqlite_pragmas or {}).items():
            argv += ["--sqlite-pragma", f"{pragma}={setting}"]
    argv += dynamic_config_argv(dynamic_config)
    for name, kind in search_attributes.items():
        argv += ["--search-attribute", f"{name}={kind}"]
    return argv


def temporal_answers(port: int, namespace: str) -> bool:
    """The frontend is up and the namespace exists (start-dev registers it just after listening)."""
    if not accepts_connections(port):
        return False
    result = subprocess.run(
        [
            str(temporal_binary()),
            "operator",
            "namespace",
            "describe",
            "--namespace",
            namespace,
            "--address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode == 0


def start_temporal(
    *, argv: list[str], port: int, namespace: str, log: Path, search_attributes: Mapping[str, str] | None = None
) -> Launched:
    launched = launch("temporal", argv, log=log, ready=lambda: temporal_answers(port, namespace), timeout=90)
    if search_attributes:
        try:
            ensure_search_attributes(port, namespace, search_attributes)
        except BaseException:
            launched.stop()
            raise
    return launched


def ensure_search_attributes(port: int, namespace: str, wanted: Mapping[str, str]) -> list[str]:
    """Create the search attributes the namespace lacks; return their names.

    `start-dev --search-attribute` registers them only in a new database: a database kept from an older
    version of the stack (`db_filename`) would lack any added since, and the starter would halt on it."""
    temporal = str(temporal_binary())
    address = ["--address", f"127.0.0.1:{port}", "--namespace", namespace]
    listed = subprocess.run(
        [temporal, "operator", "search-attribute", "list", *address, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    present = json.loads(listed.stdout).get("customAttributes", {})
    missing = {name: kind for name, kind in wanted.items() if name not in present}
    # One at a time: with several names of one type, the dev server's SQLite visibility created only the first.
    for name, kind in missing.items():
        subprocess.run(
            [temporal, "operator", "search-attribute", "create", "--name", name, "--type", kind, *address],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    return sorted(missing)


def start_bridge_simulator(
    *,
    port: int,
    data_dir: Path | None,
    seed_file: Path | None,
    file_delay: float,
    time_scale: float,
    rate_limits: bool,
    log: Path,
    file_delay_per_cid_ms: float = 0.0,
    event_delay: float = 0.0,
    event_jitter: float = 0.0,
    extra_args: Sequence[str] = (),
    also_ready: Callable[[], bool] = lambda: True,
) -> Launched:
    """The DICT simulator, as `cidsync bridge-sim`, in this interpreter's environment; `extra_args` for
    the rest of its flags (e.g. its DICT API face), `also_ready` for what they start."""
    argv = [
        sys.executable,
        "-m",
        "cidsync",
        "bridge-sim",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--file-delay",
        str(file_delay),
        "--time-scale",
        str(time_scale),
        "--file-delay-per-cid-ms",
        str(file_delay_per_cid_ms),
        "--event-delay",
        str(event_delay),
        "--event-jitter",
        str(event_jitter),
    ]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if seed_file is not None:
        argv += ["--seed-file", str(seed_file)]
    if not rate_limits:
        argv.append("--no-rate-limits")
    argv += extra_args
    return launch("bridge", argv, log=log, ready=lambda: accepts_connections(port) and also_ready())


def start_bridge_serve(
    *,
    port: int,
    pki: DictPki,
    dict_api_port: int,
    spool_dir: Path,
    log: Path,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Launched:
    """`cidsync bridge serve` on loopback `port`, calling the simulator's DICT API v2 on `dict_api_port` as the
    participant of `pki`; `env` for the rest of its settings (its Redis, its TLS), `options` for its flags."""
    environment = {
        **pki.connector_env(f"https://127.0.0.1:{dict_api_port}/api/v2/"),
        "CIDSYNC_BRIDGE_HOST": "127.0.0.1",
        "CIDSYNC_BRIDGE_PORT": str(port),
        "CIDSYNC_BRIDGE_SPOOL_DIR": str(spool_dir),
        **(env or {}),
    }
    argv = [sys.executable, "-m", "cidsync", "bridge", "serve", *options]
    return launch("bridge", argv, log=log, ready=lambda: accepts_connections(port), env=environment)


def start_role(
    role: str,
    options: list[str],
    *,
    state_dir: Path,
    env: Mapping[str, str],
    log: Path,
    ready: Callable[[], bool] = lambda: True,
) -> Launched:
    """`cidsync worker`, `cidsync starter` or `cidsync codec-server`, finding every endpoint through the
    stack's state file."""
    argv = [sys.executable, "-m", "cidsync", role, *options]
    # The development key secret, explicitly: a role outside a dev stack refuses to start without one.
    environment = {"CIDSYNC_STATE_DIR": str(state_dir), ENVIRONMENT["key_secret"]: DEVELOPMENT_KEY_SECRET, **env}
    return launch(role, argv, log=log, ready=ready, env=environment)
