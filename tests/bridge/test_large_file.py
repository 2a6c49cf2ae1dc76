"""A file of 50,000 CIDs, paged and streamed, with the client's memory bounded (measured)."""

import hashlib
import random
import tracemalloc
from collections.abc import AsyncIterator, Callable

import pytest

from cidsync.bridge.client import BridgeClient
from cidsync.bridge.models import CIDPage, CIDSetFile
from cidsync.entry import KeyType
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from cidsync_tooling.synthetic import synthetic_entry
from tests.bridge.test_contract import wait_available
from tests.helpers.servers import BridgeSimulator

# 50,000 here (100,000 cost 20 CPU-s more of make test's budget); `make bench` pages 1M-CID files
# (bench/bridge_pages.py). The client's peak does not grow with the file (0.26 MB traced at 50,000).
COUNT = 50_000
# What the file would weigh held in memory as Python strings (64-char str: ~113 bytes each, plus a list).
WHOLE_FILE_BYTES = COUNT * 113


@pytest.fixture(scope="module")
async def big_file(bridge_simulator: BridgeSimulator) -> CIDSetFile:
    participant = f"{random.randrange(10**8):08d}"
    rng = random.Random(participant)
    async with SimulatorAdmin(bridge_simulator.address, deadline=120) as admin:
        await admin.load(synthetic_entry(rng, participant, KeyType.EVP) for _ in range(COUNT))
    async with BridgeClient(bridge_simulator.address) as client:
        return await wait_available(client, await client.create_cid_set_file(participant, KeyType.EVP))


async def _unary_pages(client: BridgeClient, participant: str, file_id: str) -> AsyncIterator[CIDPage]:
    token = ""
    while True:
        page = await client.get_cid_page(participant, file_id, token, page_size=1_000)
        yield page
        token = page.next_page_token
        if not token:
            return


@pytest.mark.parametrize("mode", ["paged", "streamed"])
async def test_50k_cids_with_bounded_client_memory(
    bridge_simulator: BridgeSimulator, big_file: CIDSetFile, mode: str
) -> None:
    assert big_file.cid_count == COUNT
    async with BridgeClient(bridge_simulator.address) as client:
        pages: Callable[[], AsyncIterator[CIDPage]] = (
            (lambda: _unary_pages(client, big_file.participant, big_file.file_id))
            if mode == "paged"
            else (lambda: client.cid_pages(big_file.participant, big_file.file_id, page_size=1_000))
        )
        digest, count, previous = hashlib.sha256(), 0, ""
        tracemalloc.start()
        async for page in pages():
            for value in page.cids:
                assert value > previous  # the file's order, no duplicates
                previous = value
                digest.update(value.encode() + b"\n")
            count += len(page.cids)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert (count, digest.hexdigest()) == (COUNT, big_file.sha256)
    # Bounded by a page or two, not by the file: a tenth of what holding the file would take.
    assert peak < WHOLE_FILE_BYTES / 10, f"peak {peak / 1e6:.1f} MB"
