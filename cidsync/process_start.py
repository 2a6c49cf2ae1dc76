"""Telling a process from a later one that got its pid: when it started, counted from the machine's boot.

psutil's `create_time()` is wall-clock time (boot time + ticks since boot), and the kernel moves its boot
time whenever the clock is stepped (NTP, a VM resumed). Compared across two commands, a step of a second made
every server of a running dev stack look dead: the commands found no endpoints and the stack could not stop
its own servers. The start counted from boot never moves; psutil uses it for its own process identity, but
not in its public API, so Linux reads it from `/proc` here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil

# Ticks are 1/100 s on Linux; any difference below one tick is the same start.
SAME_START = 0.005


def started(pid: int) -> float:
    """Seconds from boot to the start of process `pid` (Linux); elsewhere its wall-clock start time, the best
    psutil offers there. Raises `psutil.NoSuchProcess` when there is no such process."""
    if sys.platform != "linux":
        return float(psutil.Process(pid).create_time())
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    # The command name (field 2) is in parentheses and may hold spaces; field 22, the start, is 20th after it.
    after_name = stat.rpartition(")")[2].split()
    return int(after_name[19]) / os.sysconf("SC_CLK_TCK")


def still_running(pid: int, start: float) -> bool:
    """Process `pid` runs, is not a zombie, and is the one that started at `start` (see `started`)."""
    try:
        return abs(started(pid) - start) < SAME_START and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def from_wall_clock(create_time: float) -> float:
    """The `started` of a process recorded by its wall-clock `create_time` (state written by an earlier
    cidsync), right unless the clock was stepped since."""
    return create_time - psutil.boot_time() if sys.platform == "linux" else create_time
