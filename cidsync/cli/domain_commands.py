"""Commands on the domain alone: no server is needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cidsync.cid import cid
from cidsync.entry import parse_entry_json
from cidsync.errors import InvalidInput, Problem


def read_input(source: str, what: str) -> bytes:
    """The bytes of `source`, a path or `-` for standard input; unreadable input is invalid input."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise InvalidInput(what, [Problem(source, f"cannot be read: {error.strerror}")]) from None


def _cid(args: argparse.Namespace) -> int:
    entry = parse_entry_json(read_input(args.entry, "entry"))
    print(cid(entry))
    return 0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "cid",
        help="print the CID of one entry",
        description="Print the CID of one entry: the `entry` object of the event contract, request_id "
        "included, as JSON. Invalid fields are listed on stderr and the exit status is 2.",
    )
    parser.add_argument("--entry", required=True, metavar="FILE", help="a JSON file, or - for stdin")
    parser.set_defaults(handler=_cid)
