"""The one paced publisher's clock: items handed over in chunks on a fixed schedule.

Chunk `i` (of `chunk` items) is due `i * chunk / rate` seconds after the start. A fixed schedule, not a
sleep after each send: a slow send does not lower the rate, the next chunk is simply due sooner. Chunks
let a caller do per-chunk work (make a tenth of a second's changes in DICT first, then publish their
events) and keep the number of wake-ups low at high rates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

T = TypeVar("T")


async def paced(items: Sequence[T], rate: float, chunk: int = 1) -> AsyncIterator[list[T]]:
    """Yield `items` `chunk` at a time at `rate` items per second (0: as fast as the caller takes them)."""
    if rate < 0 or chunk < 1:
        raise ValueError(f"rate must be 0 or more and chunk 1 or more, not {rate} and {chunk}")
    started = time.perf_counter()
    for index in range(0, len(items), chunk):
        if rate > 0 and (delay := started + index / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        yield list(items[index : index + chunk])


def chunk_for(rate: float, per_second: int = 10) -> int:
    """A chunk of `1/per_second` of a second's items at `rate` (at least one)."""
    return max(1, int(rate / per_second))
