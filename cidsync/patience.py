"""Waiting for a server at start: how the long-running roles outlast a restart of the whole stack.

One loop for every dependency a role needs before it can work (Temporal, Redis): try, and while the
server does not answer, warn and try again with backoff (0.5 s doubling to 10 s) until `wait` is spent.
One-shot commands pass no wait and fail fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def until_answered(
    what: str, attempt: Callable[[], Awaitable[T]], unanswered: tuple[type[BaseException], ...], wait: timedelta
) -> T:
    """`attempt()`'s result; `unanswered` errors are retried until `wait` runs out, then raised."""
    deadline = time.monotonic() + wait.total_seconds()
    delay = 0.5
    while True:
        try:
            return await attempt()
        except unanswered as error:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s does not answer (%s); trying again in %.1f s", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
