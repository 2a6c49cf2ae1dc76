"""The starter refuses to run against a namespace that lacks its search attributes, and says how to fix it."""

import uuid
from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.topics import Topics
from starters.entry_events import EntryEventStarter, StarterHalted
from starters.options import StarterConfig
from tests.helpers.servers import PulsarBroker, RedisServer


async def test_missing_search_attributes_halt_the_starter_with_the_fix(
    temporal_env: WorkflowEnvironment, redis_server: RedisServer, pulsar_broker: PulsarBroker
) -> None:
    namespace = f"bare-{uuid.uuid4().hex[:8]}"
    retention = Duration()
    retention.FromTimedelta(timedelta(days=1))
    await temporal_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=retention)
    )
    target = temporal_env.client.service_client.config.target_host
    bare = await Client.connect(target, namespace=namespace, data_converter=pydantic_data_converter)
    redis = redis_client(redis_server.url)
    pulsar = pulsar_client(pulsar_broker.url)
    starter = EntryEventStarter(bare, CIDStore(redis, b"s"), pulsar, Topics(), StarterConfig())
    try:
        with pytest.raises(StarterHalted) as halted:
            await starter.check_search_attributes()
    finally:
        await pulsar.close()
        await redis.aclose()
    message = str(halted.value)
    assert f"namespace {namespace} lacks the search attributes CidParticipant, CidKeyType" in message
    assert "temporal operator search-attribute create --name CidKeyType --type Keyword" in message
