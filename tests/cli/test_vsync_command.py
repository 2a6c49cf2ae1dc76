"""`cidsync vsync` reads the store as DESIGN.md §7 promises: a JSON list of pairs."""

import json
import uuid

from activities.cid_store import CIDChange, CIDStore
from cidsync.cid import vsync
from cidsync.config import DEVELOPMENT_KEY_SECRET
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from tests.cli_runner import cidsync
from tests.conftest import RedisServer


async def test_vsync_json_lists_each_pair(redis_server: RedisServer, participant: str) -> None:
    client = redis_client(redis_server.url)
    store = CIDStore(client, DEVELOPMENT_KEY_SECRET.encode())
    cids = {KeyType.CPF: ["1" * 64, "2" * 64], KeyType.EVP: ["3" * 64]}
    try:
        for key_type, values in cids.items():
            for n, value in enumerate(values):
                await store.apply_change(CIDChange(participant=participant, key_type=key_type, key=f"k{n}",
                                                   sequence=1, cid=value, event_id=str(uuid.uuid4())))  # fmt: skip
    finally:
        await client.aclose()
    result = cidsync("vsync", "--participant", participant, "--json", "--redis-url", redis_server.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"participant": participant, "key_type": "CPF", "count": 2, "vsync": vsync(cids[KeyType.CPF])},
        {"participant": participant, "key_type": "EVP", "count": 1, "vsync": "3" * 64},
    ]
    only_evp = cidsync("vsync", "--participant", participant, "--key-type", "EVP", "--redis-url", redis_server.url)
    assert only_evp.stdout.splitlines()[1].split() == [participant, "EVP", "1", "3" * 64]
