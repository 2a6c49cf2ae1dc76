"""DICT's rate limits kept on our side (`cidsync.bridge.budget`), on a real Redis and the real simulator: the
participant's bucket is shared by every client, a routine reader leaves the reserve to the others, and a
call past the budget is refused before DICT sees it."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from cidsync.bridge import errors
from cidsync.bridge.budget import DICT_BUCKETS, MARGIN, Bucket, DictBudget, parse_budgets
from cidsync.bridge.client import BridgeClient
from cidsync.config import load_settings
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput
from cidsync.redis_client import redis_client
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.helpers.servers import BridgeSimulator, RedisServer

# 60 a minute, 10 at most (9 with the margin): a bucket a test can empty and see refill within a second.
SMALL = {"ListCidSetEvents": Bucket(60, 10), "VerifySync": Bucket(60, 10)}


@pytest.fixture
async def budget(redis_server: RedisServer) -> AsyncIterator[DictBudget]:
    redis = redis_client(redis_server.url)
    yield DictBudget(redis, SMALL)
    await redis.aclose()


async def test_a_participants_bucket_is_shared_and_refills(budget: DictBudget, participant: str) -> None:
    other = DictBudget(budget.redis, SMALL)  # another worker replica
    waits = [await (budget if n % 2 else other).take(participant, "VerifySync") for n in range(9)]
    assert waits == [0.0] * 9  # the bucket's 9 tokens, taken by both
    wait = await budget.take(participant, "VerifySync")
    assert 0 < wait <= 1.0  # one a second refills it
    assert await budget.take(participant, "ListCidSetEvents") == 0.0  # each operation has its own bucket
    assert await budget.take("99999999", "VerifySync") == 0.0  # and each participant


async def test_a_routine_reader_leaves_the_reserve(budget: DictBudget, participant: str) -> None:
    taken = [await budget.take(participant, "ListCidSetEvents", reserve=5) for _ in range(5)]
    assert taken[:4] == [0.0] * 4  # 9 tokens, 5 of them reserved
    assert taken[4] > 0
    assert await budget.take(participant, "ListCidSetEvents") == 0.0  # the others may spend the reserve


async def test_a_call_past_the_budget_never_reaches_dict(
    redis_server: RedisServer, bridge_simulator: BridgeSimulator, simulator_admin: SimulatorAdmin, participant: str
) -> None:
    redis = redis_client(redis_server.url)
    now = datetime.now(UTC)
    try:
        async with BridgeClient(bridge_simulator.address, budget=DictBudget(redis, SMALL)) as bridge:
            before = (await simulator_admin.stats())["calls"].get("ListCidSetEvents", 0)
            for _ in range(9):
                await bridge.list_cid_set_events(participant, KeyType.EVP, now - timedelta(minutes=1), now)
            with pytest.raises(errors.RateLimited) as refused:
                await bridge.list_cid_set_events(participant, KeyType.EVP, now - timedelta(minutes=1), now)
            assert 0 < refused.value.retry_after <= 1.0
            assert (await simulator_admin.stats())["calls"].get("ListCidSetEvents", 0) - before == 9
            routine = bridge.reserving(20.0)
            assert (routine.budget, routine.reserve, bridge.reserve) == (bridge.budget, 20.0, 0.0)
    finally:
        await redis.aclose()


def test_dicts_published_buckets_with_a_margin() -> None:
    assert DICT_BUCKETS["VerifySync"] == Bucket(10, 50)
    assert DICT_BUCKETS["ListCidSetEvents"] == Bucket(20, 100)
    assert MARGIN < 1


def test_budgets_are_parsed_and_bad_ones_refused_with_the_reason() -> None:
    assert parse_budgets("VerifySync=5/20")["VerifySync"] == Bucket(5, 20)
    assert parse_budgets("")["ListCidSetEvents"] == Bucket(20, 100)
    with pytest.raises(ValueError, match="'<per minute>/<bucket size>'"):
        parse_budgets("VerifySync=fast")
    with pytest.raises(ValueError, match="no DICT budget is kept for 'CreateEntry'"):
        parse_budgets("CreateEntry=1/1")
    with pytest.raises(InvalidInput, match="CIDSYNC_DICT_BUDGETS"):
        load_settings({}, environ={"CIDSYNC_DICT_BUDGETS": "VerifySync=0/10"}, dev_endpoints={})
    assert load_settings({}, environ={"CIDSYNC_DICT_BUDGETS": "off"}, dev_endpoints={}).dict_budgets == "off"
