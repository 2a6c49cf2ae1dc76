"""What the commands share: the connection flags and how settings are resolved from them, the pair and
participant flags, the followers' timing flags, and running an async handler.

The connection flags are made from `cidsync.config` (its setting names, variables, defaults and help), so
a setting is declared once and every command that takes it spells and documents it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from typing import Any

from cidsync.config import DEFAULTS, ENVIRONMENT, HELP, Settings, load_settings, parse_participants
from cidsync.entry import KeyType, check_participant
from cidsync.errors import InvalidInput, Problem

TEMPORAL = ("temporal_address", "temporal_namespace", "task_queue")
PULSAR = ("pulsar_url", "pulsar_namespace")


def add_settings_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """`--<setting>` for each named setting; its help says the variable and the default that apply."""
    for name in names:
        default = DEFAULTS[name]
        fallback = f"else {default}" if default not in (None, "", ()) else "else the running dev stack"
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, help=f"{HELP[name]} (default: {ENVIRONMENT[name]}, {fallback})"
        )


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings, the flags this command has taking precedence (`cidsync.config.load_settings`)."""
    return load_settings({name: getattr(args, name, None) for name in ENVIRONMENT})


def cli_identity() -> str:
    """How a one-shot command shows in Temporal: the OS user who ran it."""
    return f"cidsync-cli@{getpass.getuser()}"


def add_pair(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--participant", required=required, metavar="ISPB")
    parser.add_argument("--key-type", required=required, choices=[k.value for k in KeyType])


def participant_flag(value: str) -> str:
    return check_participant(value, field="--participant")


def participants_of(args: argparse.Namespace, settings: Settings) -> tuple[str, ...]:
    """`--participants`, else CIDSYNC_PARTICIPANTS; none is invalid input."""
    chosen = parse_participants(args.participants, "--participants") if args.participants else settings.participants
    if not chosen:
        raise InvalidInput(
            "arguments", [Problem("--participants", "none configured: set CIDSYNC_PARTICIPANTS or pass --participants")]
        )
    return chosen


def add_follow_flags(parser: argparse.ArgumentParser) -> None:
    """The followers' timing (`cidsync follow ensure`, `cidsync schedule ensure`)."""
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=120.0,
        help="how long a CID may disagree with DICT before it is repaired (120)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=15.0,
        help="between reads of DICT's log while it has more; 15 keeps five key types within "
        "DICT's 20 calls a minute per participant",
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the longest wait while the log is quiet")


def follow_timing(*, grace_seconds: float, poll_seconds: float, idle_seconds: float) -> dict[str, timedelta]:
    """The FollowInput timing fields (each follower adds its pair); a non-positive one is invalid input."""
    given = {"grace_seconds": grace_seconds, "poll_seconds": poll_seconds, "idle_seconds": idle_seconds}
    problems = [
        Problem(f"--{name.replace('_', '-')}", "must be positive") for name, value in given.items() if value <= 0
    ]
    if problems:
        raise InvalidInput("arguments", problems)
    return {
        "grace": timedelta(seconds=grace_seconds),
        "poll_interval": timedelta(seconds=poll_seconds),
        "idle_interval": timedelta(seconds=max(idle_seconds, poll_seconds)),
    }


def follow_timing_of(args: argparse.Namespace) -> dict[str, timedelta]:
    return follow_timing(
        grace_seconds=args.grace_seconds, poll_seconds=args.poll_seconds, idle_seconds=args.idle_seconds
    )


def stop_on_signals() -> asyncio.Event:
    """Set on SIGTERM or SIGINT: how a long-running command learns to drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def run_async(handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    """A command's handler: the async one, run to its end on a new event loop."""
    return lambda args: asyncio.run(handler(args))
