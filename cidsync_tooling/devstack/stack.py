"""`cidsync dev up|status|down`: the embedded stack as a set of processes with a state file.

The state file (`<state_dir>/state.json`) is the single source of what is running: every other
command reads its endpoints from it when no configuration is given (docs/design.md §7), and `down` stops
exactly the processes it lists. `up` is idempotent: what is alive is kept, what died is started again
on the ports it had, so a second `up` is harmless. A lock file serialises concurrent `up`/`down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from cidsync.codec import KEYS_FILE_VARIABLE, KEYS_VARIABLE
from cidsync.config import LOCAL_ENDPOINTS_FILE
from cidsync.process_start import from_wall_clock
from cidsync_tooling.devstack.pki import kept_dict_pki
from cidsync_tooling.devstack.processes import (
    Launched,
    ProcessRef,
    StackError,
    accepts_connections,
    check_ports_free,
    free_port,
)
from cidsync_tooling.devstack.servers import (
    start_bridge_serve,
    start_bridge_simulator,
    start_pulsar,
    start_redis,
    start_role,
    start_temporal,
    temporal_argv,
)
from cidsync_tooling.devstack.spec import MAX_REPLICAS, StackSpec, StarterSpec, WorkerSpec

STATE_FILE = "state.json"


class ServiceState(BaseModel):
    model_config = ConfigDict(frozen=True)

    pid: int
    started: float
    log: str
    ports: dict[str, int]

    @model_validator(mode="before")
    @classmethod
    def _earlier_format(cls, data: Any) -> Any:
        """A stack started by an earlier cidsync recorded `create_time`: it can still be stopped."""
        if isinstance(data, dict) and "create_time" in data and "started" not in data:
            data = {k: v for k, v in data.items() if k != "create_time"} | {
                "started": from_wall_clock(float(data["create_time"]))
            }
        return data

    @property
    def ref(self) -> ProcessRef:
        return ProcessRef(self.pid, self.started)


class StackState(BaseModel):
    """What `dev up` started, and where to reach it."""

    config: str
    state_dir: str
    services: dict[str, ServiceState] = {}
    temporal_namespace: str = "default"
    pulsar_namespace: str = "public/default"

    @property
    def temporal_address(self) -> str | None:
        svc = self.services.get("temporal")
        return f"127.0.0.1:{svc.ports['grpc']}" if svc else None

    @property
    def temporal_ui(self) -> str | None:
        svc = self.services.get("temporal")
        return f"http://127.0.0.1:{svc.ports['ui']}" if svc and "ui" in svc.ports else None

    @property
    def pulsar_url(self) -> str | None:
        svc = self.services.get("pulsar")
        return f"pulsar://127.0.0.1:{svc.ports['broker']}" if svc else None

    @property
    def redis_url(self) -> str | None:
        svc = self.services.get("redis")
        return f"redis://127.0.0.1:{svc.ports['redis']}/0" if svc else None

    @property
    def bridge_address(self) -> str | None:
        """The Bridge the workers call: `bridge serve` in front of DICT API v2, else the simulator's gRPC."""
        svc = self.services.get("bridge") or self.services.get("simulator")
        return f"127.0.0.1:{svc.ports['grpc']}" if svc else None

    @property
    def simulator_address(self) -> str | None:
        """The simulator's gRPC port: its admin calls (load, diverge, faults) and the Bridge contract."""
        svc = self.services.get("simulator")
        return f"127.0.0.1:{svc.ports['grpc']}" if svc else None

    @property
    def dict_url(self) -> str | None:
        """The simulator's DICT API v2, which `bridge serve` calls."""
        svc = self.services.get("simulator")
        return f"https://127.0.0.1:{svc.ports['api']}/api/v2/" if svc and "api" in svc.ports else None

    def endpoints(self) -> dict[str, str | None]:
        return {
            "temporal_address": self.temporal_address,
            "temporal_namespace": self.temporal_namespace,
            "temporal_ui": self.temporal_ui,
            "pulsar_url": self.pulsar_url,
            "pulsar_namespace": self.pulsar_namespace,
            "redis_url": self.redis_url,
            "bridge_address": self.bridge_address,
            "simulator_address": self.simulator_address,
            "dict_url": self.dict_url,
            "codec_url": self._codec_url,
            "codec_keys_file": str(Path(self.state_dir) / CODEC_KEYS_FILE) if self._codec_url else None,
            "worker_metrics": self._metrics_of("worker"),
            "starter_metrics": self._metrics_of("starter"),
            "bridge_metrics": self._metrics_of("bridge"),
        }

    @property
    def _codec_url(self) -> str | None:
        svc = self.services.get("codec")
        return f"http://127.0.0.1:{svc.ports['http']}" if svc else None

    def _metrics_of(self, role: str) -> str | None:
        """The role's endpoint base URL: `/metrics`, `/healthz` and `/readyz` under it."""
        svc = self.services.get(role)
        return f"http://127.0.0.1:{svc.ports['metrics']}" if svc and "metrics" in svc.ports else None

    def running(self) -> dict[str, bool]:
        return {name: svc.ref.alive() for name, svc in self.services.items()}


def read_state(state_dir: Path) -> StackState | None:
    path = state_dir / STATE_FILE
    try:
        return StackState.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise StackError(f"{path} is damaged ({error}); stop the processes by hand and remove it") from None


# Which service serves each setting the commands read from a running stack (cidsync.config): the first
# of those listed that the stack runs.
_SERVED_BY = {
    "temporal_address": ("temporal",),
    "temporal_namespace": ("temporal",),
    "pulsar_url": ("pulsar",),
    "pulsar_namespace": ("pulsar",),
    "redis_url": ("redis",),
    "bridge_address": ("bridge", "simulator"),
    "simulator_address": ("simulator",),
    "codec_keys_file": ("codec",),
}


def _server_of(state: StackState, setting: str) -> ServiceState | None:
    return next((state.services[name] for name in _SERVED_BY[setting] if name in state.services), None)


def _write_state(state: StackState) -> None:
    """The state file, and the endpoints file every command reads (`cidsync.config.LOCAL_ENDPOINTS_FILE`)."""
    directory = Path(state.state_dir)
    endpoints = state.endpoints()
    published = {
        name: {"value": endpoints[name], "pid": service.pid, "started": service.started}
        for name in _SERVED_BY
        if endpoints.get(name) and (service := _server_of(state, name)) is not None
    }
    _atomic_write(directory / STATE_FILE, state.model_dump_json(indent=2))
    _atomic_write(directory / LOCAL_ENDPOINTS_FILE, json.dumps(published, indent=2))


def _forget(state_dir: Path) -> None:
    for name in (STATE_FILE, LOCAL_ENDPOINTS_FILE):
        (state_dir / name).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class _Service:
    """One server of the stack: the ports it needs and how to start it on them."""

    name: str
    ports: Callable[[StackSpec], dict[str, int]]
    start: Callable[[StackSpec, dict[str, int], Path], Launched]
    enabled: Callable[[StackSpec], bool] = lambda _: True


def _temporal_ports(spec: StackSpec) -> dict[str, int]:
    ports = {"grpc": spec.temporal.port}
    if spec.temporal.ui_port is not None:
        ports["ui"] = spec.temporal.ui_port
    return ports


def _start_temporal(spec: StackSpec, ports: dict[str, int], logs: Path) -> Launched:
    t = spec.temporal
    argv = temporal_argv(
        port=ports["grpc"],
        ui_port=ports.get("ui"),
        namespace=t.namespace,
        db_filename=t.db_filename,
        log_level=t.log_level,
        dynamic_config=t.dynamic_config,
        search_attributes=t.search_attributes,
        sqlite_pragmas=t.sqlite_pragmas,
        ui_codec_endpoint=f"http://127.0.0.1:{spec.codec.port}" if spec.codec.enabled else None,
    )
    return start_temporal(
        argv=argv,
        port=ports["grpc"],
        namespace=t.namespace,
        log=logs / "temporal.log",
        search_attributes=t.search_attributes,
    )


CODEC_KEYS_FILE = "codec-keys"


def codec_keys_file(spec: StackSpec) -> Path:
    """The stack's own codec key, made at its first `up` (0600) and kept with its state: the payloads in
    `.cidsync/temporal.db` stay readable across restarts."""
    path = spec.state_dir / CODEC_KEYS_FILE
    if not path.exists():
        from cidsync.codec.encryption import new_key  # the codec loads only here: `status` and `down` skip it

        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(
                f"# the dev stack's payload-codec key (cidsync codec-key); never for production\ndev1={new_key()}\n"
            )
    return path


def _codec_env(spec: StackSpec) -> dict[str, str]:
    """The roles encrypt with the stack's key, unless the developer configured keys of their own."""
    if not spec.codec.enabled or os.environ.get(KEYS_VARIABLE) or os.environ.get(KEYS_FILE_VARIABLE):
        return {}
    return {KEYS_FILE_VARIABLE: str(codec_keys_file(spec))}


def _start_codec(spec: StackSpec, ports: dict[str, int], logs: Path) -> Launched:
    port = ports["http"]
    origins = [f"http://{host}:{spec.temporal.ui_port}" for host in ("127.0.0.1", "localhost")]
    options = ["--bind", f"127.0.0.1:{port}", *(arg for o in origins for arg in ("--ui-origin", o))]
    return start_role(
        "codec-server",
        options,
        state_dir=spec.state_dir,
        env=_codec_env(spec),
        log=logs / "codec.log",
        ready=lambda: accepts_connections(port),
    )


def _metrics_bind(ports: dict[str, int]) -> list[str]:
    return ["--metrics-bind", f"127.0.0.1:{ports['metrics']}"] if "metrics" in ports else []


def _role_ports(port: int | None) -> dict[str, int]:
    return {} if port is None else {"metrics": port}


def _start_worker(name: str, spec: StackSpec, ports: dict[str, int], logs: Path, extra: Sequence[str] = ()) -> Launched:
    w = spec.worker
    options = [
        "--task-queue",
        w.task_queue,
        "--graceful-shutdown-seconds",
        str(w.graceful_shutdown_seconds),
        *(["--build-id", w.build_id] if w.build_id else []),
        *_metrics_bind(ports),
        *extra,
    ]
    return start_role(
        "worker", options, state_dir=spec.state_dir, env=_codec_env(spec), log=logs / f"{name}.log", ready=_bound(ports)
    )


def _bound(ports: dict[str, int]) -> Callable[[], bool]:
    """Ready once the role's metrics endpoint answers: a role that could not bind it exits, and `up` says so
    with its log instead of leaving a dead worker behind it (the demo then waited for it until its timeout)."""
    return (lambda: accepts_connections(ports["metrics"])) if "metrics" in ports else (lambda: True)


def start_worker_beside(spec: StackSpec, name: str, options: Sequence[str] = ()) -> Launched:
    """A worker as the stack's own are started, with `options` added, but outside the stack's state: `down`
    does not know it, so its caller stops it. The chaos run's upgrade starts a new version's workers so,
    beside the old ones, until those drain (chaos/stack.py). No metrics endpoint."""
    return _start_worker(name, spec, {}, spec.state_dir / "logs", options)


def _start_starter(name: str, spec: StackSpec, ports: dict[str, int], logs: Path) -> Launched:
    s = spec.starter
    options = [
        "--task-queue",
        spec.worker.task_queue,
        "--mode",
        s.mode,
        "--subscription-type",
        s.subscription_type,
        "--nack-delay-s",
        f"{s.nack_delay_seconds:g}",
        *_metrics_bind(ports),
    ]
    env = {"CIDSYNC_WAITING_PERIOD_DAYS": str(s.waiting_period_days), **_codec_env(spec)}
    return start_role(
        "starter", options, state_dir=spec.state_dir, env=env, log=logs / f"{name}.log", ready=_bound(ports)
    )


PKI_DIR = "pki"


def _start_simulator(spec: StackSpec, ports: dict[str, int], logs: Path) -> Launched:
    """DICT: the Bridge contract on its gRPC port, DICT API v2 on its API port with the stack's certificates."""
    d = spec.simulator
    api_port = ports["api"]
    return start_bridge_simulator(
        port=ports["grpc"],
        data_dir=d.data_dir,
        seed_file=d.seed_file,
        file_delay=d.file_delay_seconds,
        file_delay_per_cid_ms=d.file_delay_per_cid_ms,
        event_delay=d.event_delay_seconds,
        event_jitter=d.event_jitter_seconds,
        time_scale=d.time_scale,
        rate_limits=d.rate_limits,
        log=logs / "simulator.log",
        extra_args=kept_dict_pki(spec.state_dir / PKI_DIR).simulator_flags(api_port),
        also_ready=lambda: accepts_connections(api_port),
    )


def _bridge_ports(spec: StackSpec) -> dict[str, int]:
    return {"grpc": spec.bridge.port, **_role_ports(spec.bridge.metrics_port)}


def _start_bridge(spec: StackSpec, ports: dict[str, int], logs: Path) -> Launched:
    """`cidsync bridge serve` on loopback, calling the simulator's DICT API v2 as the participant, with the
    stack's Redis (found through its state) for its file requests."""
    return start_bridge_serve(
        port=ports["grpc"],
        pki=kept_dict_pki(spec.state_dir / PKI_DIR),
        dict_api_port=spec.simulator.api_port,
        spool_dir=spec.state_dir / "bridge-spool",
        log=logs / "bridge.log",
        options=["--log-level", spec.bridge.log_level, *_metrics_bind(ports)],
        env={"CIDSYNC_STATE_DIR": str(spec.state_dir)},
    )


def replica_name(role: str, index: int) -> str:
    """`worker`, `worker-2`, `worker-3`...: the first keeps the role's name, as on a stack of one."""
    return role if index == 1 else f"{role}-{index}"


def _replicas(role: Literal["worker", "starter"], start: Callable[..., Launched]) -> tuple[_Service, ...]:
    def spec_of(s: StackSpec) -> WorkerSpec | StarterSpec:
        return s.worker if role == "worker" else s.starter

    return tuple(
        _Service(
            replica_name(role, index),
            lambda s: _role_ports(spec_of(s).metrics_port),
            functools.partial(start, replica_name(role, index)),
            lambda s, index=index: spec_of(s).enabled and spec_of(s).replicas >= index,  # type: ignore[misc]
        )
        for index in range(1, MAX_REPLICAS + 1)
    )


# Start order; `down` stops in reverse, so clients go before the servers they use.
SERVICES: tuple[_Service, ...] = (
    _Service(
        "redis",
        lambda s: {"redis": s.redis.port},
        lambda s, p, logs: start_redis(
            port=p["redis"], data_dir=s.redis.data_dir, appendonly=s.redis.appendonly, log=logs / "redis.log"
        ),
    ),
    _Service(
        "pulsar",
        lambda s: {"broker": s.pulsar.port, "metrics": s.pulsar.metrics_port},
        lambda s, p, logs: start_pulsar(
            port=p["broker"], metrics_port=p["metrics"], data_dir=s.pulsar.data_dir, log=logs / "pulsar.log"
        ),
    ),
    # Before Temporal, whose UI is told where it answers.
    _Service("codec", lambda s: {"http": s.codec.port}, _start_codec, lambda s: s.codec.enabled),
    _Service("temporal", _temporal_ports, _start_temporal),
    _Service("simulator", lambda s: {"grpc": s.simulator.port, "api": s.simulator.api_port}, _start_simulator),
    # After the simulator, whose DICT API it calls, and before the workers, which call it.
    _Service("bridge", _bridge_ports, _start_bridge, lambda s: s.bridge.enabled),
    *_replicas("worker", _start_worker),
    *_replicas("starter", _start_starter),
)


def _choose_ports(wanted: dict[str, int], taken: set[int]) -> dict[str, int]:
    chosen = {}
    for label, port in wanted.items():
        if port == 0:
            port = free_port()
            while port in taken:
                port = free_port()
        taken.add(port)
        chosen[label] = port
    return chosen


def _with_chosen_ports(spec: StackSpec, ports: dict[str, dict[str, int]]) -> StackSpec:
    """The spec with the ports one service must know of another's: the codec server's CORS names the UI's
    origin, the UI is told the codec server's URL, `bridge serve` the simulator's DICT API. A port of 0 is
    only known once chosen."""
    temporal, codec, simulator = ports.get("temporal", {}), ports.get("codec", {}), ports.get("simulator", {})
    return spec.model_copy(
        update={
            "temporal": spec.temporal.model_copy(update={"ui_port": temporal.get("ui", spec.temporal.ui_port)}),
            "codec": spec.codec.model_copy(update={"port": codec.get("http", spec.codec.port)}),
            "simulator": spec.simulator.model_copy(update={"api_port": simulator.get("api", spec.simulator.api_port)}),
        }
    )


def _port_label(service: str, label: str) -> str:
    return service if label == service else f"{service} {label}"


def up(spec: StackSpec, config_path: Path, on_start: Callable[[str], None] = lambda _: None) -> StackState:
    """Start whatever of the stack is not running; return the state with every endpoint."""
    state_dir = spec.state_dir
    with _locked(state_dir):
        state = read_state(state_dir) or StackState(config=str(config_path), state_dir=str(state_dir))
        state = state.model_copy(
            update={"temporal_namespace": spec.temporal.namespace, "pulsar_namespace": spec.pulsar.namespace}
        )
        started: list[Launched] = []
        try:
            # Plan first and check every port before starting anything, so a taken port fails fast
            # and leaves nothing half-started.
            taken = {port for svc in state.services.values() for port in svc.ports.values()}
            plan: list[tuple[_Service, dict[str, int]]] = []
            for service in SERVICES:
                if not service.enabled(spec):
                    continue
                previous = state.services.get(service.name)
                if previous is not None and previous.ref.alive():
                    continue
                # A service that died keeps its ports, so clients configured from the state still work.
                ports = previous.ports if previous else _choose_ports(service.ports(spec), taken)
                plan.append((service, ports))
            check_ports_free(
                {_port_label(service.name, label): port for service, ports in plan for label, port in ports.items()}
            )
            spec = _with_chosen_ports(
                spec,
                {**{n: s.ports for n, s in state.services.items()}, **{service.name: ports for service, ports in plan}},
            )
            for service, ports in plan:
                on_start(service.name)
                launched = service.start(spec, ports, state_dir / "logs")
                started.append(launched)
                ref = launched.ref
                record = ServiceState(pid=ref.pid, started=ref.started, log=str(launched.log), ports=ports)
                state = state.model_copy(update={"services": {**state.services, service.name: record}})
                _write_state(state)
        except BaseException:
            for launched in reversed(started):
                launched.stop()
            # The dead keep their records: the next `up` starts them on the same ports, where the clients
            # of the live ones look for them.
            if any(s.ref.alive() for s in state.services.values()):
                _write_state(state)
            else:
                _forget(state_dir)
            raise
        _write_state(state)
        return state


def down(state_dir: Path, on_stop: Callable[[str], None] = lambda _: None) -> list[str]:
    """Stop every process the state file lists, newest role first; return the names stopped."""
    with _locked(state_dir):
        state = read_state(state_dir)
        if state is None:
            return []
        stopped = []
        order = [s.name for s in SERVICES if s.name in state.services]
        order += [name for name in state.services if name not in order]
        for name in reversed(order):
            ref = state.services[name].ref
            if ref.alive():
                on_stop(name)
                ref.stop()
                stopped.append(name)
        _forget(state_dir)
        return stopped
