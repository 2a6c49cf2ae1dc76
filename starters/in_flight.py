"""The starter's work under way: each handling runs as a task holding one slot of a bounded pool.

Waiting for a free slot is the backpressure: the receive loop that waits receives no more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("starters.entry_events")


class InFlight:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    async def spawn(self, slots: asyncio.Semaphore, work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Wait for one of `slots`, then run `work(*args)` as a task that gives the slot back when it ends
        (the coroutine is made once the slot is held, so a stop while waiting leaves nothing half-made)."""
        await slots.acquire()
        task = asyncio.ensure_future(work(*args))
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            slots.release()
            if not done.cancelled() and done.exception() is not None:
                logger.error("message handling failed unexpectedly", exc_info=done.exception())

        task.add_done_callback(finished)

    async def finish(self, within: float) -> None:
        """Let what is under way end (at most `within` seconds): a stop drains, it does not cut."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)
