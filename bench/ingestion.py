"""Ingestion throughput and publish->applied latency, per-event and batch mode, on a fresh embedded stack.

Run: .venv/bin/python bench/ingestion.py [--burst N] [--rate R --seconds S] [--mode per-event|batch|both]

For each mode a fresh stack is brought up (its own Temporal database, as STACK.md advises for long
runs) with the worker and starter in that mode. "Applied" is the moment the event's idempotency mark
appears in Redis (the apply script sets it atomically with the change), observed through keyspace
notifications, so no polling interval blurs the latency. WAITING_PERIOD deletes are published as
IMMEDIATE ones, since they would wait 30 days.

- burst: N events published as fast as possible; events/s = N / (last applied - first published).
- steady: R events/s for S seconds; latency p50/p99 from each event's broker ack to its mark.

After the burst it prints the CPU-seconds each process spent (the stack's, and this one's publishing),
per event too: where the time goes when every part shares the machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from cidsync.config import load_settings
from cidsync.devstack.spec import BridgeSpec, PulsarSpec, RedisSpec, StackSpec, StarterSpec, TemporalSpec
from cidsync.devstack.stack import StackState, down, up
from cidsync.events import DeletionType, EntryEvent
from cidsync.naming import SEARCH_ATTRIBUTES
from cidsync.producer import EntryEventProducer, build_event
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.synthetic import synthetic_history
from cidsync.topics import Topics


def stack_spec(root: Path, mode: str) -> StackSpec:
    return StackSpec(
        state_dir=root / "state",
        temporal=TemporalSpec(
            port=0,
            ui_port=None,
            db_filename=root / "temporal.db",
            log_level="error",
            search_attributes={k.name: "Keyword" for k in SEARCH_ATTRIBUTES},
        ),
        pulsar=PulsarSpec(port=0, data_dir=root / "pulsar"),
        redis=RedisSpec(port=0, data_dir=root / "redis", appendonly=False),
        bridge=BridgeSpec(port=0),
        starter=StarterSpec(mode=mode),
    )


def events(count: int, seed: int) -> list[EntryEvent]:
    out = []
    for change in synthetic_history(count, ["12345678", "87654321"], seed=seed):
        deletion = DeletionType.IMMEDIATE if change.deletion_type else None
        out.append(build_event(change.event_type, change.entry, "bench", deletion_type=deletion))
    return out


async def publish(
    pulsar_url: str, namespace: str, batch: list[EntryEvent], rate: float, acked: dict[str, float]
) -> float:
    """Publish `batch` at `rate` events/s (0: as fast as possible); each event's broker ack time goes into
    `acked`. Returns when the first was published."""
    producer = EntryEventProducer(pulsar_client(pulsar_url), topics=Topics(namespace=namespace), owns_client=True)
    await producer.start()
    first = time.perf_counter()

    async def send(event: EntryEvent) -> None:
        await producer.publish_event(event)
        acked[str(event.event_id)] = time.perf_counter()

    tasks = []
    for index, event in enumerate(batch):
        if rate > 0:
            await asyncio.sleep(max(0.0, first + index / rate - time.perf_counter()))
        tasks.append(asyncio.ensure_future(send(event)))
    await asyncio.gather(*tasks)
    await producer.close()
    return first


async def measure(
    pulsar_url: str, redis_url: str, namespace: str, batch: list[EntryEvent], rate: float
) -> dict[str, float]:
    store = CIDStore(redis_client(redis_url), b"bench: reads marks only")
    applied: dict[str, float] = {}
    acked: dict[str, float] = {}
    wanted = {str(e.event_id) for e in batch}
    try:
        async with store.applied_events() as event_ids:

            async def listen() -> None:
                async for event_id in event_ids:
                    if event_id in wanted and event_id not in applied:
                        applied[event_id] = time.perf_counter()
                        if len(applied) == len(wanted):
                            return

            listener = asyncio.ensure_future(listen())
            first = await publish(pulsar_url, namespace, batch, rate, acked)
            await asyncio.wait_for(listener, timeout=1800)
    finally:
        await store.close()
    latencies = sorted((applied[i] - acked[i]) * 1000 for i in wanted)
    return {
        "events": len(batch),
        "events_per_s": len(batch) / (max(applied.values()) - first),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


class CpuSeconds:
    """CPU-seconds each process of the stack (and this one, the publisher) spends while a measurement runs:
    where the time goes when everything shares the machine's two cores."""

    def __init__(self, state: StackState) -> None:
        self.processes = {name: psutil.Process(service.pid) for name, service in state.services.items()}
        self.processes["bench"] = psutil.Process()
        self.before = {name: self._spent(p) for name, p in self.processes.items()}

    @staticmethod
    def _spent(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def report(self, events: int) -> str:
        spent = {name: self._spent(p) - self.before[name] for name, p in self.processes.items()}
        return ", ".join(f"{name} {seconds:.1f} s ({seconds / events * 1e6:.0f} us/event)"
                         for name, seconds in sorted(spent.items(), key=lambda item: -item[1]))  # fmt: skip


def run_mode(mode: str, burst: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = stack_spec(Path(tmp), mode)
        state = up(spec, Path(tmp) / "bench.yaml")
        try:
            settings = load_settings({}, dev_endpoints=state.endpoints())
            pulsar_url, redis_url = settings.require("pulsar_url"), settings.require("redis_url")
            time.sleep(3)  # the worker and starter connect
            cpu = CpuSeconds(state)
            burst_result = asyncio.run(measure(pulsar_url, redis_url, state.pulsar_namespace, events(burst, 1), 0))
            print(
                f"{mode:<9} burst  {burst_result['events']:>6} events: {burst_result['events_per_s']:7.1f} events/s "
                f"(latency under backlog p50 {burst_result['p50_ms']:.0f} ms, p99 {burst_result['p99_ms']:.0f} ms)"
            )
            print(f"          CPU during the burst: {cpu.report(burst)}")
            steady = asyncio.run(measure(pulsar_url, redis_url, state.pulsar_namespace,
                                         events(int(rate * seconds), 2), rate))  # fmt: skip
            print(f"{mode:<9} steady {steady['events']:>6} events at {rate:g}/s: publish->applied "
                  f"p50 {steady['p50_ms']:.0f} ms, p99 {steady['p99_ms']:.0f} ms", flush=True)  # fmt: skip
        finally:
            down(spec.state_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="both", choices=["per-event", "batch", "both"])
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="steady rate for per-event; batch uses 10x")
    parser.add_argument("--seconds", type=float, default=30.0)
    options = parser.parse_args()
    modes = ["per-event", "batch"] if options.mode == "both" else [options.mode]
    for mode in modes:
        batch_mode = mode == "batch"
        run_mode(mode, options.burst * (5 if batch_mode else 1), options.rate * (10 if batch_mode else 1),
                 options.seconds)  # fmt: skip
