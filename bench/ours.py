"""Our side of `make bench`: the producer, the starter and worker draining a backlog, steady traffic's
publish->applied latency, and per-event mode; each result checked against the expected VSyncs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.common import Applied, Sampler, Stack, history, percentile, store_matches, watching
from cidsync.events import EntryEvent
from cidsync.producer import EntryEventProducer, ProducerConfig, Published
from cidsync.pulsar_client import pulsar_client
from cidsync.topics import Topics
from cidsync_tooling.pacing import chunk_for, paced

STALL_SECONDS = 60.0  # no event applied for this long: the run failed (it does not hang the bench)


async def all_applied(applied: Applied) -> None:
    """Until every awaited event is applied; `TimeoutError` naming the progress when it stalls."""
    while not applied.done.is_set():
        seen = len(applied.at)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(applied.done.wait(), STALL_SECONDS)
        if not applied.done.is_set() and len(applied.at) == seen:
            raise TimeoutError(f"no event applied for {STALL_SECONDS:.0f} s, at {seen} of {len(applied.wanted)}")


@dataclass
class Publishing:
    msgs_per_s: float
    acked_at: dict[str, float] = field(default_factory=dict)
    send_ms: list[float] = field(default_factory=list)


async def publish(stack: Stack, events: Sequence[EntryEvent], rate: float = 0.0) -> Publishing:
    """Through `EntryEventProducer` (default, batched): as fast as it goes (`rate` 0) with `publish_events`,
    as `cidsync publish` does; or at `rate`/s with `publish_event`, paced in 10 ms ticks, at most
    `max_in_flight` under way."""
    config = ProducerConfig()
    producer = EntryEventProducer(
        pulsar_client(stack.pulsar_url), topics=Topics(namespace=stack.namespace), config=config, owns_client=True
    )
    await producer.start()
    result = Publishing(0.0)
    slots = asyncio.Semaphore(config.max_in_flight)
    tasks = []

    async def send(event: EntryEvent) -> None:
        try:
            published = await producer.publish_event(event)
        finally:
            slots.release()
        result.acked_at[str(event.event_id)] = time.perf_counter()
        result.send_ms.append(published.latency_ms)

    count = len(events)
    started = time.perf_counter()
    if not rate:
        for outcome in await producer.publish_events(events):
            if not isinstance(outcome, Published):
                raise outcome
            result.acked_at[str(outcome.event_id)] = time.perf_counter()
            result.send_ms.append(outcome.latency_ms)
        events = []
    async for chunk in paced(events, rate, chunk=chunk_for(rate, per_second=100)):
        for event in chunk:
            await slots.acquire()
            tasks.append(asyncio.ensure_future(send(event)))
    await asyncio.gather(*tasks)
    result.msgs_per_s = count / (time.perf_counter() - started)
    await producer.close()
    return result


@dataclass
class Drain:
    events_per_s: float
    exact: bool
    cpu_us_per_event: dict[str, float]


async def drain(
    stack: Stack,
    sampler: Sampler,
    events: Sequence[EntryEvent],
    expected: object,
    mode: str,
    begun: Callable[[], object] | None = None,
) -> Drain:
    """Start the starter on a full backlog; events/s from the first applied to the last. CPU-seconds are
    counted from the first applied on too (not the starter's start-up); `begun` is called then."""
    async with watching(stack.redis_url, events) as applied:
        stack.start_starter(mode)
        for name, pid in stack.starter_pids().items():
            sampler.add(name, pid)
        await asyncio.wait_for(applied.begun.wait(), STALL_SECONDS)
        before = sampler.cpu_seconds()
        if begun is not None:
            begun()
        await all_applied(applied)
        after = sampler.cpu_seconds()
    cpu = {name: (after[name] - before.get(name, 0.0)) / len(events) * 1e6 for name in after}
    return Drain(applied.rate(), await store_matches(stack.redis_url, expected), cpu)  # type: ignore[arg-type]


@dataclass
class Steady:
    rate: float
    p50_ms: float
    p99_ms: float
    send_p99_ms: float
    exact: bool


async def steady(stack: Stack, rate: float, seconds: float, participants: list[str], seed: int) -> Steady:
    """`rate` events/s for `seconds` while the starter runs: publish (broker ack) -> applied latency."""
    events, expected = history(int(rate * seconds), participants, seed)
    async with watching(stack.redis_url, events) as applied:
        published = await publish(stack, events, rate)
        await all_applied(applied)
    latencies = [(applied.at[i] - published.acked_at[i]) * 1000 for i in applied.wanted]
    return Steady(
        rate,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        percentile(published.send_ms, 0.99),
        await store_matches(stack.redis_url, expected),
    )


async def paced_sends(stack: Stack, rate: float, seconds: float, participants: list[str], seed: int) -> Steady:
    """The producer's send latency at `rate`/s with the starter and worker applying what it sends, and
    nothing else in this process (`steady` shares its event loop with the watcher of 1,000s of keyspace
    notifications a second, which delays every acknowledgement). Only `send_p99_ms` and `exact` are set:
    the store is polled until it holds the expected VSyncs."""
    events, expected = history(int(rate * seconds), participants, seed)
    published = await publish(stack, events, rate)
    deadline = time.monotonic() + STALL_SECONDS
    exact = False
    while not exact and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        exact = await store_matches(stack.redis_url, expected)
    return Steady(rate, 0.0, 0.0, percentile(published.send_ms, 0.99), exact)
