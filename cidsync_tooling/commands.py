"""The developer's commands, wired into `cidsync` lazily by its composition root (`cidsync.cli`):
`dev up|status|down`, `demo`, `bridge-sim` (and its `admin`) and `publish`."""

from __future__ import annotations

from typing import Any

from cidsync_tooling import dev_commands, publish, simulator_commands


def register(commands: Any) -> None:
    dev_commands.register(commands)
    simulator_commands.register(commands)
    publish.register(commands)
