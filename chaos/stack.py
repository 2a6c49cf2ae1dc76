"""The embedded stack of a chaos run, and killing its processes the hard way.

Everything persists as on a developer's stack (Temporal's database file, Redis with AOF, the broker's
data, the simulator's DICT journal), so a SIGKILLed server comes back with what it had. `restart` is
`cidsync dev up`'s own logic: whatever is not running is started again, on the ports it had, so every
client finds it where it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cidsync.bridge.budget import DICT_BUCKETS
from cidsync_tooling.devstack.processes import Launched
from cidsync_tooling.devstack.spec import (
    BridgeSpec,
    CodecSpec,
    FollowSpec,
    PulsarSpec,
    RedisSpec,
    SimulatorSpec,
    StackSpec,
    StarterSpec,
    WorkerSpec,
    headless_temporal,
)
from cidsync_tooling.devstack.stack import StackState, down, read_state, replica_name, start_worker_beside, up

SECRET = "chaos-key-secret"
KILLABLE = ("worker", "starter", "bridge", "pulsar", "redis", "temporal")


def chaos_spec(
    root: Path,
    mode: str,
    replicas: int = 1,
    bridge: bool = True,
    dict_clock: float = 1.0,
    build_id: str | None = None,
    nack_delay: float = 60.0,
) -> StackSpec:
    return StackSpec(
        state_dir=root / "state",
        temporal=headless_temporal(root / "temporal.db"),
        pulsar=PulsarSpec(port=0, data_dir=root / "pulsar"),
        redis=RedisSpec(port=0, data_dir=root / "redis", appendonly=True),
        simulator=SimulatorSpec(
            port=0, api_port=0, data_dir=root / "dict", file_delay_seconds=1.0, time_scale=dict_clock
        ),
        bridge=BridgeSpec(port=0, enabled=bridge),  # off: the workers call the simulator's gRPC face
        codec=CodecSpec(enabled=False),
        worker=WorkerSpec(graceful_shutdown_seconds=5, replicas=replicas, build_id=build_id),
        # The spec's Shared subscription (it says why), which two starters can share too: pulsar-lite's
        # Key_Shared dispatcher also keys consumers by the client's consumer id alone, so two starters'
        # first consumers (both id 0) would collide ("Consumer 0 already exists in key-shared dispatcher").
        starter=StarterSpec(
            mode=mode,
            replicas=replicas,
            nack_delay_seconds=nack_delay,
        ),
        follow=FollowSpec(enabled=False),  # the run starts its followers itself, with short graces
    )


@dataclass
class ChaosStack:
    root: Path
    mode: str = "batch"
    replicas: int = 1  # of the worker and of the starter
    bridge: bool = True  # the workers reach DICT through bridge serve; False: the simulator's gRPC face
    dict_clock: float = 1.0  # DICT's rate limits refill this many times faster (ours in step)
    build_id: str | None = None  # the workers' build id; None: the release's
    nack_delay: float = 60.0  # the starters' `--nack-delay-s`
    kills: dict[str, int] = field(default_factory=dict)
    beside: list[Launched] = field(default_factory=list)  # a new version's workers while the old ones drain

    @property
    def spec(self) -> StackSpec:
        return self.spec_of(self.build_id)

    def spec_of(self, build_id: str | None) -> StackSpec:
        """The stack's spec, its workers built as `build_id`."""
        return chaos_spec(self.root, self.mode, self.replicas, self.bridge, self.dict_clock, build_id, self.nack_delay)

    @property
    def killable(self) -> tuple[str, ...]:
        return KILLABLE if self.bridge else tuple(role for role in KILLABLE if role != "bridge")

    def processes(self, role: str) -> list[str]:
        """The services of a role: `worker` alone, or `worker`, `worker-2`... with replicas."""
        if role not in ("worker", "starter"):
            return [role]
        return [replica_name(role, index) for index in range(1, self.replicas + 1)]

    @property
    def state(self) -> StackState:
        found = read_state(self.spec.state_dir)
        assert found is not None, "the chaos stack is not up"
        return found

    def up(self) -> StackState:
        return up(self.spec, self.root / "chaos.yaml")

    def kill(self, *names: str) -> None:
        """SIGKILL each one's whole process group: no shutdown hook runs, as in a crash."""
        services = self.state.services
        for name in names:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(services[name].pid, signal.SIGKILL)
            self.kills[name] = self.kills.get(name, 0) + 1
        deadline = time.monotonic() + 10
        while any(services[name].ref.alive() for name in names) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> StackState:
        """Start again whatever is not running (on its old ports)."""
        for attempt in range(20):
            try:
                return self.up()
            except Exception:  # a port a killed server held may take a moment to be free
                if attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def switch_starter(self, mode: str) -> None:
        """The starters in another mode: stopped (gracefully), then started with the new spec."""
        for name in self.processes("starter"):
            self.state.services[name].ref.stop()
        self.mode = mode
        self.restart()

    # An upgrade, blue-green (README, "Upgrading cidsync"): `start_new_version`, then the caller waits until
    # the old version's pinned runs are done, then `retire_old_version`.

    def start_new_version(self, build_id: str) -> None:
        """As many workers of `build_id` as the stack has, beside its own, each making its version current
        once it polls (`--make-current`, a deploy step's `set-current-version`)."""
        spec = self.spec_of(build_id)
        for index in range(1, self.replicas + 1):
            self.beside.append(start_worker_beside(spec, f"worker-{build_id}-{index}", ["--make-current"]))

    def retire_old_version(self, build_id: str) -> None:
        """The stack's workers stopped gracefully and started again as `build_id`, then the workers beside
        them stopped: the stack runs the new version alone, under its own names. A restart in between (a
        concurrent `restart`) already starts the new version: the spec changes first. The old version is
        no longer current, so its workers never make it current again."""
        self.build_id = build_id
        for name in self.processes("worker"):
            self.state.services[name].ref.stop()
        self.restart()
        for launched in self.beside:
            launched.stop()
        self.beside.clear()

    def down(self) -> None:
        for launched in self.beside:
            launched.stop()
        down(self.spec.state_dir)


def budgets_at(clock: float) -> str:
    """`CIDSYNC_DICT_BUDGETS` for DICT's rate limits on a clock `clock` times faster (the simulator's
    `time_scale`): our copy of DICT's limits keeps in step with the simulator's."""
    return ",".join(f"{op}={b.per_minute * clock:g}/{b.size:g}" for op, b in DICT_BUCKETS.items())


@contextlib.contextmanager
def chaos_stack(
    root: Path, replicas: int = 1, bridge: bool = True, dict_clock: float = 1.0, nack_delay: float = 60.0
) -> Iterator[ChaosStack]:
    # The roles inherit these.
    wanted = {"CIDSYNC_KEY_SECRET": SECRET, "CIDSYNC_DICT_BUDGETS": budgets_at(dict_clock)}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    stack = ChaosStack(root, replicas=replicas, bridge=bridge, dict_clock=dict_clock, nack_delay=nack_delay)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
