"""A 60,000-CID file from the simulator's DICT API, as `cidsync bridge-sim --dict-api-port` serves it (its
own process), downloaded and read by the connector with its memory bounded (measured)."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

from cidsync.bridge.models import FileStatus
from cidsync.dict_api.client import DictApiClient, DictApiConfig, cids_of
from cidsync.dict_api.messages import CidSetFileInfo
from cidsync.entry import KeyType
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.dict_api.conftest import DictApiSimulator
from tests.helpers.eventually import eventually

# 60,000 here (200,000 cost 40 CPU-s more of make test's budget); `make bench` reads 1M-CID files
# (bench/bridge_chain.py). The client's peak does not grow with the file (0.7 MB traced at 60,000), so the
# bound below, a quarter of the file held as strings, still tells a streaming client from one that holds it.
COUNT = 60_000
FILE_BYTES = COUNT * 65  # 64 hex digits and a newline each
HELD_AS_STRINGS = COUNT * 113  # a 64-char str weighs ~113 bytes


async def test_60k_cids_downloaded_and_read_in_bounded_memory(
    dict_api_simulator: DictApiSimulator, tmp_path: Path
) -> None:
    participant = f"{random.randrange(10**8):08d}"
    async with SimulatorAdmin(dict_api_simulator.admin_address, deadline=120) as admin:
        loaded, _ = await admin.load_synthetic(participant, KeyType.EVP, COUNT, seed=3)
    assert loaded == COUNT
    pki = dict_api_simulator.pki
    config = DictApiConfig(dict_api_simulator.url, pki.participant_cert, pki.participant_key, pki.ca,
                           pki.dict_signer_cert)  # fmt: skip
    async with DictApiClient(config) as dict_:
        requested = await dict_.create_cid_set_file(participant, KeyType.EVP)

        async def status() -> CidSetFileInfo:
            return await dict_.get_cid_set_file(participant, requested.id)

        # DICT's CIDS_FILES_READ bucket: 50, then 10 a minute; polling every second stays well inside it.
        available = await eventually(status, lambda f: f.status is FileStatus.AVAILABLE, "the file AVAILABLE",
                                     timeout=60, every=1.0)  # fmt: skip
        assert available.bytes == FILE_BYTES
        tracemalloc.start()
        spool = await dict_.download(available, tmp_path / "file.cids")
        count = sum(1 for _ in cids_of(spool))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert count == COUNT
    # The file is 3.9 MB; held as Python strings it would be ~6.8 MB. Spooled and read line by line, the
    # client's traced peak stays a small fraction of it.
    assert peak < HELD_AS_STRINGS / 4, f"client peak traced memory {peak / 1e6:.1f} MB, {FILE_BYTES / 1e6:.1f} MB file"
