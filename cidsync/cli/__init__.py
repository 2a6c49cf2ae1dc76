"""The `cidsync` command: the composition root that wires configuration to every role.

Exit status, for every command (docs/design.md §7): 0 success, 2 invalid input (the reason on stderr, one
line per bad field), 1 any other failure. The process ends with `os._exit` after flushing: a process
that used the Temporal client can abort at interpreter exit (sdk-python issue 300, docs/stack.md), and a
one-shot command must never lose its exit status to that.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from cidsync import __version__
from cidsync.cli import (
    bridge_commands,
    codec_commands,
    domain_commands,
    follow_commands,
    reconcile_commands,
    run_commands,
    store_commands,
)
from cidsync.errors import CommandFailed, InvalidInput
from cidsync.patience import Interrupted, NoAnswer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported like every other invalid input (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cidsync",
        description="Keeps a PIX participant's DICT CIDs and VSyncs right, on Temporal.",
        epilog="Settings come from flags, then CIDSYNC_*/TEMPORAL_* variables, then a running "
        "`cidsync dev up`. Exit status: 0 ok, 2 invalid input, 1 any other failure.",
    )
    parser.add_argument("--version", action="version", version=f"cidsync {__version__}")
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", required=True, parser_class=_Parser
    )
    domain_commands.register(commands)
    bridge_commands.register(commands)
    codec_commands.register(commands)
    run_commands.register(commands)
    store_commands.register(commands)
    reconcile_commands.register(commands)
    follow_commands.register(commands)
    _register_tooling(commands)
    return parser


def _register_tooling(commands: Any) -> None:
    """The developer's commands (`dev`, `demo`, `bridge-sim`, `publish`) come from the tooling package,
    imported here and nowhere else in the product; an image that leaves it out has the product's alone."""
    try:
        from cidsync_tooling.commands import register
    except ModuleNotFoundError as missing:
        if missing.name != "cidsync_tooling":
            raise
        return
    register(commands)


def run(argv: Sequence[str] | None = None) -> int:
    # What a command needs is imported when it runs, not here: a short command (`dev status`, `key-id`,
    # `bridge verify`) paid 0.8 CPU-s to start when every module was loaded up front.
    parser = build_parser()
    tracing: Any = None
    try:
        args = parser.parse_args(argv)
        from cidsync.telemetry import tracing

        tracing.setup(f"cidsync-{args.command}")
        code: int = args.handler(args)
        return code
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE
    except InvalidInput as error:
        print(error.report(), file=sys.stderr)
        return EXIT_INVALID_INPUT
    except (CommandFailed, OSError) as error:
        print(f"cidsync: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Interrupted as stopped:
        print(f"cidsync: {stopped}", file=sys.stderr)
        return 0
    except NoAnswer as error:
        print(f"cidsync: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("cidsync: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        return _refused(error)
    finally:
        if tracing is not None:
            tracing.shutdown()  # before os._exit: the spans of the last events still go out


def _refused(error: Exception) -> int:
    """The Bridge's and Temporal's refusals, said plainly; anything else is a bug, raised with its traceback."""
    from temporalio.service import RPCError

    from cidsync.bridge.errors import BridgeError, InvalidArgument

    if isinstance(error, InvalidArgument):
        print(f"cidsync: the Bridge refused the request: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    if isinstance(error, BridgeError):
        print(f"cidsync: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if isinstance(error, RPCError):  # e.g. a search attribute the namespace lacks: a deployment problem
        print(f"cidsync: Temporal refused the request ({error.status.name}): {error.message}", file=sys.stderr)
        return EXIT_FAILURE
    raise error


def main() -> NoReturn:
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
