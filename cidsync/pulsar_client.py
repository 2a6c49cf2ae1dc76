"""The one way cidsync builds a Pulsar client (beside `cidsync.redis_client` for Redis)."""

from __future__ import annotations

import logging
from typing import Any

import pulsar.asyncio as pulsar_asyncio


def pulsar_client(service_url: str, **options: Any) -> pulsar_asyncio.Client:
    """A Pulsar client whose native logs go to Python logging (logger "pulsar"), not to stdout."""
    options.setdefault("logger", logging.getLogger("pulsar"))
    options.setdefault("operation_timeout_seconds", 30)
    return pulsar_asyncio.Client(service_url, **options)
