"""What the pair's journal costs the store's apply: 20,000 creations in batches of 500 on one redis-server,
with the scripts as they are and with their `journal(...)` calls removed, alternating, twice.

Run: PYTHONPATH=. .venv/bin/python -m bench.journal_cost
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time

import cidsync.store.cid_store as cid_store
from cidsync.change import CIDChange
from cidsync.entry import Entry, KeyType
from cidsync.redis_client import redis_client
from cidsync.store import scripts
from cidsync_tooling.devstack.processes import free_port
from cidsync_tooling.synthetic import pair_random, synthetic_entry

CHANGES, BATCH = 20_000, 500


def without_journal(script: str) -> str:
    stripped = script.replace("    journal(old_cid, '-')\n", "").replace("    journal(new_cid, '+')\n", "")
    assert stripped != script, "the scripts no longer journal as this bench expects"
    return stripped


async def applies_per_second(url: str, apply: str, repair: str, entries: list[Entry]) -> float:
    scripts.APPLY, scripts.REPAIR = apply, repair  # what the next store's script loader loads
    store = cid_store.CIDStore(redis_client(url), b"bench")
    changes = [CIDChange.creation(e, sequence=1, key_secret=b"bench") for e in entries]
    started = time.perf_counter()
    for start in range(0, len(changes), BATCH):
        await store.ingestion.apply_batch(changes[start : start + BATCH])
    elapsed = time.perf_counter() - started
    await store.redis.flushall()
    await store.close()
    return len(changes) / elapsed


async def main(url: str) -> None:
    rng = pair_random("12345678", KeyType.EVP, 1)
    entries = [synthetic_entry(rng, "12345678", KeyType.EVP) for _ in range(CHANGES)]
    plain = (without_journal(scripts.APPLY), without_journal(scripts.REPAIR))
    for _ in range(2):
        for label, (apply, repair) in (("with journal", (scripts.APPLY, scripts.REPAIR)), ("without", plain)):
            print(f"{label}: {await applies_per_second(url, apply, repair, entries):,.0f} applies/s", flush=True)


if __name__ == "__main__":
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [".venv/bin/redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", data],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            asyncio.run(main(f"redis://127.0.0.1:{port}/0"))
        finally:
            server.terminate()
