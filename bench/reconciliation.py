"""Reconciliation at scale: N CIDs with 1% divergence, against the DICT simulator, on a fresh embedded stack.

Run: .venv/bin/python bench/reconciliation.py [--sizes 100000,1000000] [--time-scale 1] [--bridges direct,serve]

Each size runs once per Bridge, in the same run: the worker calling the simulator's gRPC face directly, and
the worker calling `bridge serve`, which calls the simulator's DICT API v2 (mutual TLS, signed XML, the CID
file downloaded and spooled), as in production. A `--time-scale` above 1 speeds DICT's rate-limit clock and
turns our own copy of DICT's limits off (`CIDSYNC_DICT_BUDGETS=off`), so the pipeline shows, not the limits.

For each size a fresh stack is brought up (Temporal, Pulsar, Redis, the DICT simulator and the worker as
its own process; no starter). One EVP pair is seeded identically on both sides (the simulator generates
its entries itself, `LoadSynthetic`; the local store gets the same entries through the versioned apply),
then DICT diverges by 1% of N: 30% of it new entries, 40% removals, 30% alterations (an alteration is one
DICT-only and one local-only CID). One ReconcileVSync runs with a threshold above the divergence (no
operator in a benchmark) and the bench reports:

- wall time from start to result, and the time of each phase from the workflow's history;
- the worker process's RSS before the run and its peak during it (sampled every 100 ms), which must not
  grow with N: the CID list goes from the Bridge into Redis page by page, and only counts reach the worker's
  memory or the workflow's history.

DICT's rate limits apply as configured (`--time-scale 1`: real time). The DICT-only CIDs each need a
`GetEntryByCid`, which DICT allows 1,200 a minute (bucket 1,200), so at 1M that step dominates the wall
time by design: ~(DICT-only - 1,200) / 20 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil

from cidsync.change import CIDChange
from cidsync.config import load_settings
from cidsync.entry import KeyType
from cidsync.naming import search_attribute_types
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.temporal_client import connect
from cidsync_tooling.devstack.spec import (
    BridgeSpec,
    PulsarSpec,
    RedisSpec,
    SimulatorSpec,
    StackSpec,
    StarterSpec,
    TemporalSpec,
)
from cidsync_tooling.devstack.stack import down, up
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.synthetic import pair_random, synthetic_entry
from starters.reconciliation import start_reconciliation
from workflows.reconcile_vsync import ReconcileInput

PARTICIPANT = "12345678"
KEY_TYPE = KeyType.EVP
SEED = 20261123
CHUNK = 10_000


BRIDGES = {"direct": "the simulator's gRPC face", "serve": "bridge serve and the simulator's DICT API v2"}


def stack_spec(root: Path, time_scale: float, bridge: str) -> StackSpec:
    return StackSpec(
        state_dir=root / "state",
        temporal=TemporalSpec(
            port=0,
            ui_port=None,
            db_filename=root / "temporal.db",
            log_level="error",
            search_attributes=search_attribute_types(),
        ),
        pulsar=PulsarSpec(port=0, data_dir=root / "pulsar"),
        redis=RedisSpec(port=0, data_dir=root / "redis", appendonly=False),
        simulator=SimulatorSpec(port=0, api_port=0, data_dir=None, time_scale=time_scale, file_delay_seconds=2.0),
        bridge=BridgeSpec(port=0, enabled=bridge == "serve"),
        starter=StarterSpec(enabled=False),
    )


async def seed_local(store: CIDStore, size: int) -> None:
    """The same entries the simulator generates from SEED, applied in chunks (never all in memory)."""
    rng = pair_random(PARTICIPANT, KEY_TYPE, SEED)
    done = 0
    while done < size:
        changes = [
            CIDChange.creation(synthetic_entry(rng, PARTICIPANT, KEY_TYPE), sequence=1, key_secret=store.key_secret)
            for _ in range(min(CHUNK, size - done))
        ]
        await store.ingestion.apply_batch(changes)
        done += len(changes)


class PeakRss:
    """Samples a process's RSS in a thread, so the event loop's own pauses do not hide a peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def phases(history: Any) -> dict[str, float]:
    """Seconds spent per activity type (scheduled to completed, retries included), from the history."""
    scheduled: dict[int, tuple[str, float]] = {}
    spent: dict[str, float] = {}
    for event in history.events:
        at = event.event_time.ToDatetime().timestamp()
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (event.activity_task_scheduled_event_attributes.activity_type.name, at)
        elif event.HasField("activity_task_completed_event_attributes"):
            name, start = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            spent[name] = spent.get(name, 0.0) + at - start
    return spent


async def run_size(state: Any, size: int) -> dict[str, Any]:
    settings = load_settings({}, dev_endpoints=state.endpoints())
    store = CIDStore(redis_client(settings.require("redis_url")), settings.key_secret_bytes)
    divergence = size // 100
    add, remove, alter = divergence * 3 // 10, divergence * 4 // 10, divergence * 3 // 20
    async with SimulatorAdmin(state.simulator_address, deadline=900) as admin:
        started = time.perf_counter()
        loaded, _ = await admin.load_synthetic(PARTICIPANT, KEY_TYPE, size, seed=SEED)
        dict_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await seed_local(store, size)
        local_seconds = time.perf_counter() - started
        assert loaded == size == await store.view.count(PARTICIPANT, KEY_TYPE), "the two sides must start equal"
        await admin.diverge(PARTICIPANT, KEY_TYPE, add=add, remove=remove, alter=alter, seed=7)
        print(
            f"   seeded {size:,} CIDs (DICT {dict_seconds:.0f} s, local {local_seconds:.0f} s); DICT diverged: "
            f"{add} added, {remove} removed, {alter} altered",
            flush=True,
        )
    worker_pid = state.services["worker"].pid
    client = await connect(settings, identity="bench")
    rss = PeakRss(worker_pid)
    started = time.perf_counter()
    request = ReconcileInput(
        participant=PARTICIPANT,
        key_type=KEY_TYPE,
        trigger="bench",
        divergence_threshold=size,
        poll_initial=timedelta(seconds=1),
        grace=timedelta(seconds=2),
    )  # a quiet pair: nothing is in flight
    handle = await start_reconciliation(client, request, settings.task_queue)
    result = await handle.result()
    wall = time.perf_counter() - started
    rss.stop()
    spent = phases(await handle.fetch_history())
    await store.close()
    return {
        "size": size,
        "divergence": divergence,
        "outcome": result.outcome.value,
        "added": result.added,
        "removed": result.removed,
        "vanished": result.vanished,
        "verifications": result.verifications,
        "wall_s": wall,
        "rss_before_mb": rss.baseline / 2**20,
        "rss_peak_mb": rss.peak / 2**20,
        "phases": spent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--time-scale", type=float, default=1.0, help="the simulator's rate-limit clock (1: real)")
    parser.add_argument(
        "--bridges",
        default="direct,serve",
        help="the worker's Bridge, each in turn: direct (the simulator's "
        "gRPC face) and serve (bridge serve in front of the simulator's DICT API v2)",
    )
    args = parser.parse_args()
    print(f"== reconciliation ({' '.join(sys.argv)})", flush=True)
    if args.time_scale != 1:  # DICT's clock sped up: our own copy of its limits must not stand in for it
        os.environ["CIDSYNC_DICT_BUDGETS"] = "off"
    for size in (int(s) for s in args.sizes.split(",")):
        walls = {}
        for bridge in args.bridges.split(","):
            print(f"-- {size:,} CIDs, the worker's Bridge: {BRIDGES[bridge]}", flush=True)
            result = run_on_fresh_stack(size, args.time_scale, bridge)
            report(result)
            walls[bridge] = result["wall_s"]
        if {"direct", "serve"} <= walls.keys():
            print(
                f"   {size:,} CIDs through bridge serve / direct: {walls['serve']:.1f} s / {walls['direct']:.1f} s "
                f"= {walls['serve'] / walls['direct']:.2f}x",
                flush=True,
            )


def run_on_fresh_stack(size: int, time_scale: float, bridge: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        state = up(stack_spec(Path(tmp), time_scale, bridge), Path(tmp) / "bench.yaml")
        try:
            time.sleep(3)  # the worker connects
            return asyncio.run(run_size(state, size))
        finally:
            down(Path(tmp) / "state")


def report(r: dict[str, Any]) -> None:
    slowest = sorted(r["phases"].items(), key=lambda x: -x[1])
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest)
    print(
        f"{r['size']:>9,} CIDs, {r['divergence']:,} divergent: {r['outcome']} in {r['wall_s']:.1f} s "
        f"(added {r['added']}, removed {r['removed']}, vanished {r['vanished']}, "
        f"{r['verifications']} verifications); worker RSS {r['rss_before_mb']:.0f} MB before, "
        f"peak {r['rss_peak_mb']:.0f} MB",
        flush=True,
    )
    print(f"   time per activity: {steps}", flush=True)


if __name__ == "__main__":
    main()
