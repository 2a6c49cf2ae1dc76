"""The one way a test waits for something that happens elsewhere: poll it until it holds.

No fixed sleeps: a test waits exactly as long as the condition takes, up to a timeout that only a bug
reaches, and then fails saying what it waited for and what it last saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    read: Callable[[], Awaitable[T]],
    holds: Callable[[T], bool],
    what: str,
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 (a deadline of the whole wait, not of one call)
    every: float = 0.25,
) -> T:
    """Read until `holds(value)`, and return that value; AssertionError with the last value after `timeout`."""
    last: list[T] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await read()
                if holds(value):
                    return value
                last[:] = [value]
                await asyncio.sleep(every)
    except TimeoutError:
        seen = repr(last[0]) if last else "nothing"
        raise AssertionError(f"not within {timeout:.0f} s: {what} (last seen: {seen})") from None


def eventually_sync(check: Callable[[], bool], what: str, *, timeout: float = 60.0, every: float = 0.3) -> None:
    """`eventually` for a test that is not async (a subprocess's endpoint, a file)."""
    eventually_value(check, bool, what, timeout=timeout, every=every)


def eventually_value(
    read: Callable[[], T], holds: Callable[[T], bool], what: str, *, timeout: float = 60.0, every: float = 0.3
) -> T:
    """`eventually` for a test that is not async, returning the value that held (an HTTP API's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if holds(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what} (last seen: {value!r:.2000})")
        time.sleep(every)


async def eventually_true(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (a deadline of the whole wait, not of one call)
    every: float = 0.005,
) -> None:
    """`eventually` for a condition on in-process state (a fake's records): nothing to await but time."""

    async def read() -> bool:
        return check()

    await eventually(read, bool, what, timeout=timeout, every=every)
