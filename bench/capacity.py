"""The measured inputs of docs/capacity.md: Redis bytes per key and per idempotency mark (on one Redis and
on a 3-primary Redis Cluster), the entry event's size on the wire, and Temporal's billable actions per
event in each starter mode (the dev server's own `action` counter).

Run: .venv/bin/python -m bench.capacity [--keys 100000,300000]

Each part gets fresh servers. Memory is Redis's `used_memory` (summed over the primaries of the cluster)
after applying N creations of one pair through the store's own versioned apply, then again after deleting
the N idempotency marks they left: the difference is the marks' share, the rest the keys'. Actions are the
dev server's `action` counter while the real starter and worker take events offered at a steady rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio.cluster import RedisCluster

from bench.common import Stack, fresh_stack, history, store_matches
from bench.ours import publish
from cidsync.change import CIDChange
from cidsync.entry import KeyType
from cidsync.redis_client import RedisClient, redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import MARK_PATTERN
from cidsync_tooling.devstack.processes import Launched, free_cluster_port, free_port
from cidsync_tooling.devstack.servers import form_cluster, start_redis
from cidsync_tooling.synthetic import synthetic_entry

SECRET = b"capacity-secret"


@contextmanager
def redis_servers(root: Path, cluster: bool) -> Iterator[str]:
    """A fresh Redis (or 3-primary cluster), nothing on disk; its URL."""
    ports: list[int] = []
    for _ in range(3 if cluster else 1):
        ports.append(free_cluster_port(ports) if cluster else free_port())
    nodes: list[Launched] = []
    try:
        for port in ports:
            where = root / f"redis-{port}"
            nodes.append(start_redis(port=port, data_dir=where, appendonly=False, log=where / "log", cluster=cluster))
        if cluster:
            form_cluster(ports)
            yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)
        else:
            yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.stop()


async def used_memory(client: RedisClient) -> int:
    """Redis's `used_memory`, summed over a cluster's primaries."""
    if isinstance(client, RedisCluster):
        per_node: Any = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(info["used_memory"]) for info in per_node.values())
    return int((await client.info("memory"))["used_memory"])


async def memory_per_key(url: str, count: int) -> dict[str, float]:
    """Bytes per active key and per mark, N creations of one CPF pair."""
    client = redis_client(url)
    store = CIDStore(client, SECRET)
    rng = random.Random(count)
    try:
        base = await used_memory(client)
        for start in range(0, count, 1_000):
            entries = [synthetic_entry(rng, "12345678", KeyType.CPF) for _ in range(min(1_000, count - start))]
            await store.ingestion.apply_batch([CIDChange.creation(e, sequence=1, key_secret=SECRET) for e in entries])
        with_marks = await used_memory(client)
        marks = [name async for name in client.scan_iter(match=MARK_PATTERN, count=10_000)]
        for start in range(0, len(marks), 10_000):
            async with client.pipeline(transaction=False) as pipe:
                for name in marks[start : start + 10_000]:
                    pipe.delete(name)  # (the cluster pipeline's `unlink` is a coroutine that queues nothing)
                await pipe.execute()
        without_marks = await used_memory(client)
        assert len(marks) == count, f"{len(marks)} marks for {count} changes"
        return {
            "keys": count,
            "bytes_per_key": (without_marks - base) / count,
            "bytes_per_mark": (with_marks - without_marks) / count,
        }
    finally:
        await client.aclose()


def temporal_metrics_url(pid: int) -> str:
    """The dev server serves Prometheus metrics on a port of its own choosing: find it among its listeners."""
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN:
            continue
        url = f"http://127.0.0.1:{conn.laddr.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if b"# TYPE" in reply.read(4096):
                    return url
        except OSError:
            continue
    raise RuntimeError("the Temporal dev server's metrics endpoint was not found")


def actions(url: str) -> float:
    """The server's `action` counter, summed over its labels."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r"^action(?:_total)?(?:\{[^}]*\})? (\S+)$", text, re.M))


async def _counted(stack: Stack, url: str, rate: float, seconds: float, participant: str) -> dict[str, Any]:
    """Actions the server counted while `rate` events/s for `seconds` went through the running starter."""
    events, expected = history(int(rate * seconds), [participant], 11)
    before = actions(url)
    await publish(stack, events, rate)
    deadline = time.monotonic() + 120
    while not await store_matches(stack.redis_url, expected):
        assert time.monotonic() < deadline, f"{rate}/s: the store never held the expected VSyncs"
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # the last completions reach the counter
    spent = actions(url) - before
    sizes = [len(e.to_json().encode()) for e in events]
    return {
        "rate": rate,
        "events": len(events),
        "actions": spent,
        "actions_per_event": spent / len(events),
        "event_bytes_mean": statistics.mean(sizes),
        "event_bytes_max": max(sizes),
    }


# (mode, offered events/s, seconds): batch mode at the plan's peak and at its daily mean (500,000 a day is
# 5.8/s), where a batch window of 200 ms holds about one event; per-event mode costs the same at any rate.
RUNS = (("batch", 2_000.0, 10.0), ("batch", 6.0, 40.0), ("per-event", 20.0, 15.0))


def actions_per_event(root: Path) -> list[dict[str, Any]]:
    found = []
    for mode in ("batch", "per-event"):
        with fresh_stack(root / mode) as stack:
            url = temporal_metrics_url(stack.pids()["temporal"])
            stack.start_starter(mode)
            for index, (_, rate, seconds) in enumerate(r for r in RUNS if r[0] == mode):
                measured = asyncio.run(_counted(stack, url, rate, seconds, f"7000000{index}"))
                found.append({"mode": mode, **measured})
                print(json.dumps(found[-1]), flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="100000,300000", help="creations per memory measurement")
    args = parser.parse_args()
    started = time.perf_counter()
    found: dict[str, Any] = {"memory": []}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for cluster in (False, True):
            for count in (int(n) for n in args.keys.split(",")):
                with redis_servers(root / f"{cluster}-{count}", cluster) as url:
                    measured = asyncio.run(memory_per_key(url, count))
                found["memory"].append({"cluster": cluster, **measured})
                print(json.dumps(found["memory"][-1]), flush=True)
        found["actions"] = actions_per_event(root)
    found["seconds"] = time.perf_counter() - started
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
