"""What every measurement of `make bench` shares: fresh stacks, event histories with their expected result,
watching events get applied, and sampling the processes' memory and CPU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cidsync.entry import KeyType
from cidsync.events import DeletionType, EntryEvent
from cidsync.producer import build_event
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync_tooling.bench_store import applied_events
from cidsync_tooling.devstack.processes import Launched
from cidsync_tooling.devstack.servers import start_role
from cidsync_tooling.devstack.spec import (
    BridgeSpec,
    PulsarSpec,
    RedisSpec,
    SimulatorSpec,
    StackSpec,
    StarterSpec,
    WorkerSpec,
    headless_temporal,
)
from cidsync_tooling.devstack.stack import StackState, down, replica_name, up
from cidsync_tooling.synthetic import final_vsyncs, synthetic_history

BENCH_SECRET = "bench-secret"

Expected = dict[tuple[str, KeyType], tuple[int, str]]


@dataclass
class Stack:
    """A fresh embedded stack (its own Temporal database) with the worker running and no starter: the
    bench starts the starter itself, after it has filled the backlog."""

    root: Path
    spec: StackSpec
    state: StackState
    starters: list[Launched] = field(default_factory=list)

    @property
    def pulsar_url(self) -> str:
        return self.state.pulsar_url or ""

    @property
    def redis_url(self) -> str:
        return self.state.redis_url or ""

    @property
    def temporal_address(self) -> str:
        return self.state.temporal_address or ""

    @property
    def namespace(self) -> str:
        return self.state.pulsar_namespace

    def start_starter(self, mode: str) -> None:
        """As many starters as the stack has workers (`fresh_stack`'s `replicas`), on one Key_Shared
        subscription: `starter`, `starter-2`..."""
        options = ["--mode", mode, "--log-level", "warning"]
        for index in range(1, self.spec.worker.replicas + 1):
            name = replica_name("starter", index)
            self.starters.append(
                start_role(
                    "starter",
                    options,
                    state_dir=self.spec.state_dir,
                    env={"CIDSYNC_KEY_SECRET": BENCH_SECRET},
                    log=self.root / f"{name}.log",
                )
            )

    def starter_pids(self) -> dict[str, int]:
        return {replica_name("starter", i): s.process.pid for i, s in enumerate(self.starters, start=1)}

    def pids(self) -> dict[str, int]:
        return {**{name: service.pid for name, service in self.state.services.items()}, **self.starter_pids()}


@contextlib.contextmanager
def fresh_stack(root: Path, replicas: int = 1) -> Iterator[Stack]:
    temporal = headless_temporal(root / "temporal.db")
    spec = StackSpec(
        state_dir=root / "state",
        temporal=temporal,
        pulsar=PulsarSpec(port=0, data_dir=root / "pulsar"),
        redis=RedisSpec(port=0, data_dir=root / "redis", appendonly=False),
        simulator=SimulatorSpec(port=0, api_port=0, data_dir=None),
        bridge=BridgeSpec(enabled=False),  # ingestion alone: the workers never call DICT here
        worker=WorkerSpec(replicas=replicas),
        starter=StarterSpec(enabled=False),
    )
    environment = {"CIDSYNC_KEY_SECRET": BENCH_SECRET}
    with _environment(environment):
        state = up(spec, root / "bench.yaml")
    stack = Stack(root, spec, state)
    try:
        yield stack
    finally:
        for starter in stack.starters:
            starter.stop()
        down(spec.state_dir)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The stack's roles inherit this process's environment: the key secret reaches the worker this way."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def history(count: int, participants: list[str], seed: int) -> tuple[list[EntryEvent], Expected]:
    """`count` valid events over `participants`, sequences in history order, and what the store must hold
    after them. WAITING_PERIOD deletes become IMMEDIATE ones: they would wait 30 days."""
    events = []
    for sequence, change in enumerate(synthetic_history(count, participants, seed=seed), start=1):
        deletion = DeletionType.IMMEDIATE if change.deletion_type else None
        events.append(build_event(change.event_type, change.entry, "bench", deletion_type=deletion, sequence=sequence))
    return events, final_vsyncs((e.event_type, e.entry) for e in events)


async def store_matches(redis_url: str, expected: Expected) -> bool:
    """Every pair's key count and VSync in Redis equal the in-memory computation."""
    store = CIDStore(redis_client(redis_url), BENCH_SECRET.encode())
    try:
        for (participant, key_type), (count, vsync) in expected.items():
            if (await store.view.count(participant, key_type), await store.view.vsync(participant, key_type)) != (
                count,
                vsync,
            ):
                return False
        return True
    finally:
        await store.close()


@dataclass
class Applied:
    """When each awaited event was applied (its idempotency mark appeared), seen through keyspace
    notifications, so no polling interval blurs the times."""

    wanted: set[str]
    at: dict[str, float] = field(default_factory=dict)
    begun: asyncio.Event = field(default_factory=asyncio.Event)  # the first is applied
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def first(self) -> float:
        return min(self.at.values())

    @property
    def last(self) -> float:
        return max(self.at.values())

    def rate(self) -> float:
        """Events per second from the first applied to the last."""
        return (len(self.at) - 1) / (self.last - self.first)


@contextlib.asynccontextmanager
async def watching(redis_url: str, events: Sequence[EntryEvent]) -> AsyncIterator[Applied]:
    store = CIDStore(redis_client(redis_url), BENCH_SECRET.encode())
    applied = Applied({str(e.event_id) for e in events})
    try:
        async with applied_events(store.redis) as event_ids:

            async def listen() -> None:
                async for event_id in event_ids:
                    if event_id in applied.wanted and event_id not in applied.at:
                        applied.at[event_id] = time.perf_counter()
                        applied.begun.set()
                        if len(applied.at) == len(applied.wanted):
                            applied.done.set()
                            return

            listener = asyncio.ensure_future(listen())
            try:
                yield applied
            finally:
                listener.cancel()
    finally:
        await store.close()


class Sampler:
    """Peak RSS of each process, sampled every 0.2 s on a thread while a round runs; CPU-seconds on demand."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_rss: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, name: str, pid: int) -> None:
        self.processes[name] = psutil.Process(pid)
        self.peak_rss.setdefault(name, 0)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, process in list(self.processes.items()):
                with contextlib.suppress(psutil.Error):
                    self.peak_rss[name] = max(self.peak_rss[name], process.memory_info().rss)

    def cpu_seconds(self) -> dict[str, float]:
        spent = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                spent[name] = float(times.user + times.system)
        return spent

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
