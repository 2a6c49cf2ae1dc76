"""Bridge page throughput over loopback: the client against the simulator, in separate processes.

Run: .venv/bin/python bench/bridge_pages.py [--cids N] [--page-size P]   (or `make bench`)
Prints pages/s and CIDs/s for unary paging (sequential and 8 in flight) and for the stream, and the
client's peak traced Python memory while streaming.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from cidsync.bridge.client import BridgeClient
from cidsync.bridge.serving import page_token
from cidsync.entry import KeyType
from cidsync_tooling.devstack.processes import free_port
from cidsync_tooling.devstack.servers import start_bridge_simulator
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.synthetic import synthetic_entry


async def run(cids: int, page_size: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sim = start_bridge_simulator(
            port=port,
            data_dir=None,
            seed_file=None,
            file_delay=0.1,
            time_scale=1.0,
            rate_limits=False,
            log=Path(tmp) / "bridge.log",
        )
        try:
            address = f"127.0.0.1:{port}"
            rng = random.Random(7)
            started = time.perf_counter()
            async with SimulatorAdmin(address, deadline=600) as admin:
                await admin.load(synthetic_entry(rng, "12345678", KeyType.EVP) for _ in range(cids))
            print(f"loaded {cids} entries in {time.perf_counter() - started:.1f} s")
            async with BridgeClient(address, stream_deadline=3600) as client:
                file = await client.create_cid_set_file("12345678", KeyType.EVP)
                while not file.status.final:
                    await asyncio.sleep(0.1)
                    file = await client.get_cid_set_file(file.participant, file.file_id)
                pages = -(-cids // page_size)

                started = time.perf_counter()
                token, seen = "", 0
                while True:
                    page = await client.get_cid_page(file.participant, file.file_id, token, page_size)
                    seen += len(page.cids)
                    token = page.next_page_token
                    if not token:
                        break
                report("unary, sequential", seen, pages, time.perf_counter() - started)

                started = time.perf_counter()
                tokens = ["", *(page_token(file.file_id, offset) for offset in range(page_size, cids, page_size))]
                semaphore = asyncio.Semaphore(8)

                async def fetch(tok: str) -> int:
                    async with semaphore:
                        return len((await client.get_cid_page(file.participant, file.file_id, tok, page_size)).cids)

                seen = sum(await asyncio.gather(*(fetch(t) for t in tokens)))
                report("unary, 8 in flight", seen, pages, time.perf_counter() - started)

                tracemalloc.start()
                started = time.perf_counter()
                seen = 0
                async for page in client.cid_pages(file.participant, file.file_id, page_size=page_size):
                    seen += len(page.cids)
                elapsed = time.perf_counter() - started
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                report("stream", seen, pages, elapsed)
                print(
                    f"client peak traced memory while streaming: {peak / 1e6:.2f} MB "
                    f"(the file as Python strings: ~{cids * 113 / 1e6:.0f} MB)"
                )
        finally:
            sim.stop()


def report(mode: str, seen: int, pages: int, elapsed: float) -> None:
    print(f"{mode:<20} {seen} CIDs in {elapsed:.2f} s: {pages / elapsed:,.0f} pages/s, {seen / elapsed:,.0f} CIDs/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cids", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=1_000)
    options = parser.parse_args()
    asyncio.run(run(options.cids, options.page_size))
