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
import dataclasses
import os
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from cidsync.codec import KEYS_FILE_VARIABLE, KEYS_VARIABLE
from cidsync.codec.encryption import EncryptionCodec, KeyRing
from cidsync.config import Settings
from cidsync.patience import until_answered
from cidsync.telemetry import tracing


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads; encrypted when codec keys are configured (inline keys win over a keys file, which
    may come from a running dev stack). Failure messages and stack traces are encoded too: they are
    payloads an operator of the Temporal cluster would otherwise read."""
    if os.environ.get(KEYS_VARIABLE, "").strip():
        ring = KeyRing.from_environment()
    elif settings.codec_keys_file:
        ring = KeyRing.from_environment({**os.environ, KEYS_FILE_VARIABLE: settings.codec_keys_file})
    else:
        ring = KeyRing.from_environment()
    if ring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


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
    converter = data_converter(settings)
    # RuntimeError: what the SDK raises when it cannot reach the server.
    return await until_answered(
        f"Temporal at {options['target_host']}",
        lambda: Client.connect(**options, data_converter=converter),
        (RuntimeError,),
        wait,
        stop=stop,
    )
