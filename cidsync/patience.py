"""Waiting for a server at start: how the long-running roles outlast a restart of the whole stack.

One loop for every dependency a role needs before it can work (Temporal, Redis): try, and while the
server does not answer, warn and try again with backoff (0.5 s doubling to 10 s) until `wait` is spent.
One-shot commands pass no wait and fail fast. A stop (SIGTERM, Ctrl-C) ends the wait at once: a role
that is told to stop while it waits for a server has nothing to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class NoAnswer(RuntimeError):
    """The server did not answer within the wait; the last error is the cause."""


class Interrupted(Exception):
    """A stop came while the role was still waiting for a server."""


async def until_answered(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    unanswered: tuple[type[BaseException], ...],
    wait: timedelta,
    *,
    stop: asyncio.Event | None = None,
) -> T:
    """`attempt()`'s result; `unanswered` errors are retried until `wait` runs out (then `NoAnswer`) or
    `stop` is set (then `Interrupted`)."""
    deadline = time.monotonic() + wait.total_seconds()
    delay = 0.5
    while True:
        try:
            return await attempt()
        except unanswered as error:
            if time.monotonic() + delay > deadline:
                if not wait:
                    raise
                raise NoAnswer(f"{what} did not answer within {wait}: {error}") from error
            logger.warning("%s does not answer (%s); trying again in %.1f s", what, error, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    raise Interrupted(f"stopped while waiting for {what}") from error
            delay = min(delay * 2, 10.0)
