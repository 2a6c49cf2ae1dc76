"""`cidsync vsync` reads the store as docs/design.md §7 promises: a JSON list of pairs."""

import json

from cidsync.cid import vsync
from cidsync.config import DEVELOPMENT_KEY_SECRET
from cidsync.entry import KeyType
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from tests.helpers.changes import change
from tests.helpers.cli_runner import cidsync
from tests.helpers.servers import RedisServer


async def test_vsync_json_lists_each_pair(redis_server: RedisServer, participant: str) -> None:
    secret = DEVELOPMENT_KEY_SECRET.encode()
    store = CIDStore(redis_client(redis_server.url), secret)
    cids = {KeyType.CPF: ["1" * 64, "2" * 64], KeyType.EVP: ["3" * 64]}
    try:
        for key_type, values in cids.items():
            for n, value in enumerate(values):
                await store.ingestion.apply(change(participant, key_type, f"k{n}", 1, value, secret=secret))
    finally:
        await store.close()
    result = cidsync("vsync", "--participant", participant, "--json", "--redis-url", redis_server.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"participant": participant, "key_type": "CPF", "count": 2, "vsync": vsync(cids[KeyType.CPF])},
        {"participant": participant, "key_type": "EVP", "count": 1, "vsync": "3" * 64},
    ]
    only_evp = cidsync("vsync", "--participant", participant, "--key-type", "EVP", "--redis-url", redis_server.url)
    assert only_evp.stdout.splitlines()[1].split() == [participant, "EVP", "1", "3" * 64]
