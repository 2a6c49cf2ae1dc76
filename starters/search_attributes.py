"""cidsync's search attributes on a Temporal namespace: registered by `cidsync schedule ensure` (the
deployment's set-up Job) before anything starts a workflow that sets them.

A workflow that upserts an attribute the namespace does not know fails its task, so they must exist first.
The dev stack registers them itself (temporal-dev.yaml); on a real cluster this does it through the
OperatorService, which needs an admin's rights. Temporal Cloud does not allow that to a namespace's API
key: there they are created with `tcld` or the Cloud UI, and `--no-search-attributes` skips this step.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client

from cidsync.naming import SEARCH_ATTRIBUTES


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the ones the namespace lacks; returns their names (none: all there already)."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type))  # the SDK's enum has the API's values
        for key in SEARCH_ATTRIBUTES
        if key.name not in listed.custom_attributes
    }
    # One a request, as the dev stack does (cidsync_tooling/devstack/servers.py): the dev server's SQLite
    # visibility once created only the first of several names of one type asked for together.
    for name, kind in missing.items():
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes={name: kind})
        )
    return sorted(missing)
