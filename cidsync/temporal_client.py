"""Connecting to Temporal the way the `temporal` CLI does, plus our resolution order.

`temporalio.envconfig` reads the profile file and the TEMPORAL_* variables (address, namespace, TLS, API
key, ...); an address or namespace resolved by `cidsync.config` (a flag, or a running dev stack) wins.
Every client uses the pydantic data converter: workflow inputs and results are pydantic models.

Long-running roles (worker, starter) may start before Temporal answers (a restart of the whole stack, a
rolling deploy): they pass `wait` and keep trying, with backoff and a warning each time, instead of
exiting at once. One-shot commands fail fast.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from cidsync.config import Settings
from cidsync.patience import until_answered
from cidsync.telemetry import tracing


async def connect(
    settings: Settings,
    *,
    identity: str | None = None,
    runtime: Runtime | None = None,
    wait: timedelta = timedelta(0),
    stop: asyncio.Event | None = None,
) -> Client:
    options: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if runtime is not None:
        options["runtime"] = runtime
    options["target_host"] = settings.require("temporal_address")
    options["namespace"] = settings.temporal_namespace
    if identity:
        options["identity"] = identity
    # Workers built on this client inherit its interceptors: one trace from the start to the activities.
    options["interceptors"] = [*options.get("interceptors", ()), *tracing.temporal_interceptors()]
    # RuntimeError: what the SDK raises when it cannot reach the server.
    return await until_answered(
        f"Temporal at {options['target_host']}",
        lambda: Client.connect(**options, data_converter=pydantic_data_converter),
        (RuntimeError,),
        wait,
        stop=stop,
    )
