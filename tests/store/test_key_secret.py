"""Every role must hash keys with one secret: the store remembers the first and refuses another."""

import uuid

import pytest

from cidsync.key_id import KeySecretMismatch
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from tests.helpers.servers import RedisServer

DB = 7  # a database of its own: the session's others hold the tests' shared secret


async def test_a_second_secret_is_refused_and_the_first_still_accepted(redis_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    first, second = (CIDStore(redis_client(url), f"secret-{uuid.uuid4()}".encode()) for _ in range(2))
    try:
        await first.redis.flushdb()
        await first.check_key_secret()
        with pytest.raises(KeySecretMismatch) as refused:
            await second.check_key_secret()
        assert "every starter and worker must share one secret" in str(refused.value)
        assert first.key_secret.decode() not in str(refused.value)  # a fingerprint, never the secret
        await first.check_key_secret()  # the recorded one goes on working
    finally:
        await first.redis.flushdb()
        await first.close()
        await second.close()
