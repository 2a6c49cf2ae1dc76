"""The Bridge's cost: the worker's client against the simulator's gRPC face (direct) and against
`cidsync bridge serve` in front of the simulator's DICT API (the production chain: gRPC, then HTTPS with
mutual TLS, signed XML both ways, CID files downloaded and checked), on one simulator, in one run.

Run: .venv/bin/python -m bench.bridge_chain [--cids N] [--calls N]   (1,000,000 CIDs and 300 calls by default)
Prints, for each path, VerifySync's median and 95th percentile latency over sequential calls, and the time
to get a CID file of N CIDs: request, wait for AVAILABLE, and stream every CID (through the chain the
Bridge also downloads, checks and spools it), with the chain/direct ratio of each. The reconciliation's
other steps (diff and repair in Redis, proofs) do not depend on the path and are measured by
bench/reconciliation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDSetFile
from cidsync.cid import vsync
from cidsync.entry import KeyType
from cidsync_tooling.devstack.pki import make_dict_pki
from cidsync_tooling.devstack.processes import accepts_connections, free_port
from cidsync_tooling.devstack.servers import start_bridge_serve, start_bridge_simulator, start_redis
from cidsync_tooling.simulator.admin_client import SimulatorAdmin

PARTICIPANT = "12345678"


async def latencies(client: BridgeClient, calls: int, value: str) -> tuple[float, float]:
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        await client.verify_sync(PARTICIPANT, KeyType.EVP, value)
        took.append(time.perf_counter() - started)
    took.sort()
    return statistics.median(took) * 1000, took[int(len(took) * 0.95)] * 1000


async def whole_file(client: BridgeClient) -> tuple[float, int]:
    started = time.perf_counter()
    file: CIDSetFile = await client.create_cid_set_file(PARTICIPANT, KeyType.EVP)
    while not file.status.final:
        await asyncio.sleep(0.1)
        file = await client.get_cid_set_file(PARTICIPANT, file.file_id)
    count = 0
    async for page in client.cid_pages(PARTICIPANT, file.file_id, page_size=10_000):
        count += len(page.cids)
    return time.perf_counter() - started, count


async def run(cids: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pki").mkdir()
        pki = make_dict_pki(root / "pki")
        grpc_port, api_port, redis_port, bridge_port = free_port(), free_port(), free_port(), free_port()
        sim = start_bridge_simulator(
            port=grpc_port,
            data_dir=None,
            seed_file=None,
            file_delay=0.1,
            time_scale=1.0,
            rate_limits=False,
            log=root / "sim.log",
            extra_args=pki.simulator_flags(api_port),
            also_ready=lambda: accepts_connections(api_port),
        )
        redis = start_redis(port=redis_port, data_dir=root / "redis", appendonly=False, log=root / "redis.log")
        bridge = start_bridge_serve(
            port=bridge_port,
            pki=pki,
            dict_api_port=api_port,
            spool_dir=root / "spool",
            log=root / "bridge.log",
            env={"CIDSYNC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
        )
        try:
            started = time.perf_counter()
            async with SimulatorAdmin(f"127.0.0.1:{grpc_port}", deadline=1800) as admin:
                loaded, value = await admin.load_synthetic(PARTICIPANT, KeyType.EVP, cids, seed=7)
            print(f"loaded {loaded} CIDs in {time.perf_counter() - started:.1f} s (VSync {value[:12]}...)")
            assert value != vsync([])
            direct = BridgeClient(f"127.0.0.1:{grpc_port}", stream_deadline=3600)
            chain = BridgeClient(f"127.0.0.1:{bridge_port}", stream_deadline=3600)
            async with direct, chain:
                for client in (direct, chain):  # warm: connections and TLS sessions made
                    await client.verify_sync(PARTICIPANT, KeyType.EVP, value)
                d_median, d_p95 = await latencies(direct, calls, value)
                c_median, c_p95 = await latencies(chain, calls, value)
                print(f"VerifySync over {calls} sequential calls (median / p95 ms):")
                print(f"  direct {d_median:7.2f} / {d_p95:7.2f}")
                print(f"  chain  {c_median:7.2f} / {c_p95:7.2f}   ratio {c_median / d_median:.1f}x (median)")
                print(f"  the Bridge adds {c_median - d_median:.2f} ms a call (median)")
                d_time, d_count = await whole_file(direct)
                c_time, c_count = await whole_file(chain)
                print(f"a CID file of {cids} CIDs, requested, waited for and streamed whole:")
                print(f"  direct {d_time:7.1f} s ({d_count} CIDs)")
                print(f"  chain  {c_time:7.1f} s ({c_count} CIDs)   ratio {c_time / d_time:.1f}x")
                assert d_count == c_count == cids
        finally:
            bridge.stop()
            redis.stop()
            sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cids", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(f"== bridge chain ({' '.join(sys.argv)})")
    asyncio.run(run(args.cids, args.calls))


if __name__ == "__main__":
    main()
