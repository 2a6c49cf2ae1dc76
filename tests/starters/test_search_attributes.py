"""`cidsync schedule ensure` registers cidsync's search attributes on a namespace that lacks them (a new
cluster's), before anything starts a workflow that sets them; on a namespace that has them it adds none."""

from __future__ import annotations

import uuid

from google.protobuf.duration_pb2 import Duration
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from cidsync.naming import SEARCH_ATTRIBUTES
from starters.search_attributes import ensure_search_attributes


async def test_the_missing_search_attributes_are_registered_once(temporal_env: WorkflowEnvironment) -> None:
    namespace = f"fresh-{uuid.uuid4().hex[:8]}"
    service = temporal_env.client.service_client
    await service.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400))
    )
    fresh = Client(service, namespace=namespace)
    before = await fresh.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    assert not {key.name for key in SEARCH_ATTRIBUTES} & set(before.custom_attributes)

    assert await ensure_search_attributes(fresh) == sorted(key.name for key in SEARCH_ATTRIBUTES)
    after = await fresh.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    for key in SEARCH_ATTRIBUTES:
        assert after.custom_attributes[key.name] == int(key.indexed_value_type), key.name
    assert await ensure_search_attributes(fresh) == []
    assert await ensure_search_attributes(temporal_env.client) == []  # the test server's, registered at its start
