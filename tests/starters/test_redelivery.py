"""The starter's one policy for a message whose handling failed: halt, redeliver with backoff, or
dead-letter after `max_redeliveries`; and what a dead letter carries."""

from datetime import timedelta

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from temporalio.service import RPCError, RPCStatusCode

from cidsync.errors import InvalidInput
from starters.options import StarterConfig
from starters.redelivery import TRANSIENT_RPC, Action, RedeliveryPolicy, dead_letter_properties

POLICY = RedeliveryPolicy(max_redeliveries=4, backoff_base=timedelta(seconds=1), backoff_max=timedelta(seconds=5))


def rpc(status: RPCStatusCode) -> RPCError:
    return RPCError("refused", status, b"")


@pytest.mark.parametrize("status", sorted(set(RPCStatusCode) - TRANSIENT_RPC - {RPCStatusCode.OK}))
def test_a_refusal_halts_once_refusals_have_lasted_whatever_the_count(status: RPCStatusCode) -> None:
    for count in (0, 3, 99):
        assert POLICY.decide(rpc(status), count, POLICY.halt_after).action is Action.HALT
        # Before that, redelivered, and never dead-lettered for it, whatever the count.
        early = POLICY.decide(rpc(status), count, POLICY.halt_after - timedelta(seconds=1))
        assert (early.action, early.delay) == (Action.REDELIVER, POLICY.backoff(count))


@pytest.mark.parametrize(
    "error", [rpc(RPCStatusCode.UNAVAILABLE), RedisConnectionError("down"), TimeoutError(), ConnectionError()]
)
def test_a_transient_failure_is_redelivered_with_a_doubling_capped_backoff(error: BaseException) -> None:
    delays = [POLICY.decide(error, count) for count in range(4)]
    assert [d.action for d in delays] == [Action.REDELIVER] * 4
    assert [d.delay.total_seconds() for d in delays] == [1, 2, 4, 5]


def test_after_max_redeliveries_the_message_is_dead_lettered_with_the_last_error() -> None:
    error = RedisConnectionError("still down")
    decision = POLICY.decide(error, 4)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason == f"gave up after 4 redeliveries: {error!r}"


def test_the_starters_defaults_make_the_policy_it_runs() -> None:
    config = StarterConfig()
    policy = RedeliveryPolicy(config.max_redeliveries, config.backoff_base, config.backoff_max, config.halt_after)
    assert policy.decide(TimeoutError(), config.max_redeliveries - 1).action is Action.REDELIVER
    assert policy.decide(TimeoutError(), config.max_redeliveries).action is Action.DEAD_LETTER
    assert config.halt_after == timedelta(seconds=60)
    with pytest.raises(InvalidInput, match="--halt-after-s: must be 0 or more"):
        StarterConfig(halt_after=timedelta(seconds=-1))


def test_the_nack_delay_is_pulsars_default_and_must_be_positive() -> None:
    assert StarterConfig().nack_delay == timedelta(seconds=60)
    with pytest.raises(InvalidInput, match="--nack-delay-s: must be more than 0"):
        StarterConfig(nack_delay=timedelta(0))


def test_a_dead_letter_keeps_the_original_properties_and_says_why_and_from_where() -> None:
    properties = dead_letter_properties(
        {"schema": "cidsync.entry-event/v1"},
        reason="x" * 3000,
        kind="invalid_event",
        topic="t",
        message_id="1:2",
        redelivery_count=3,
    )
    assert properties["schema"] == "cidsync.entry-event/v1"
    assert len(properties["reason"]) == 2000
    assert (properties["kind"], properties["original_topic"], properties["original_message_id"]) == (
        "invalid_event",
        "t",
        "1:2",
    )
    assert properties["redelivery_count"] == "3"
    assert "dead_lettered_at" in properties
