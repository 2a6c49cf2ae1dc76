"""Connecting to Temporal the way the `temporal` CLI does, plus our resolution order.

`temporalio.envconfig` reads the profile file and the TEMPORAL_* variables (address, namespace, TLS, API
key, ...); an address or namespace resolved by `cidsync.config` (a flag, or a running dev stack) wins.
Every client uses the pydantic data converter: workflow inputs and results are pydantic models.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

from cidsync.config import Settings


async def connect(settings: Settings, *, identity: str | None = None) -> Client:
    options: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    options["target_host"] = settings.require("temporal_address")
    options["namespace"] = settings.temporal_namespace
    if identity:
        options["identity"] = identity
    return await Client.connect(**options, data_converter=pydantic_data_converter)
