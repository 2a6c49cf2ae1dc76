"""Commands on the domain alone: no server is needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cidsync.cid import cid
from cidsync.config import ENVIRONMENT, load_settings
from cidsync.entry import KeyType, key_problem, parse_entry_json
from cidsync.errors import InvalidInput, Problem
from cidsync.key_id import key_id


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


def _key_id(args: argparse.Namespace) -> int:
    """The key id of a PIX key read from stdin: never an argument, so it stays out of shell history and `ps`."""
    raw = sys.stdin.buffer.read()
    try:
        key = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise InvalidInput("key", [Problem("stdin", "is not UTF-8 text")]) from None
    key_type = KeyType(args.key_type)
    if (problem := key_problem(key_type, key)) is not None:
        raise InvalidInput("key", [Problem("stdin", problem)])  # never echoes the key: it is personal data
    settings = load_settings({})
    if settings.key_secret is None:
        print(
            f"cidsync: {ENVIRONMENT['key_secret']} is not set: this is the id under the development secret, "
            "not production's",
            file=sys.stderr,
        )
    print(key_id(settings.key_secret_bytes, key_type, key))
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

    key = commands.add_parser(
        "key-id",
        help="print the key id (keyed hash) of a PIX key read from stdin",
        description="Print the id under which cidsync's store and Temporal name a PIX key: an HMAC of the "
        "key under CIDSYNC_KEY_SECRET (use the deployment's secret). The key is read from stdin, one line, so "
        "it never appears in shell history or the process list. Find the key's runs with "
        "`temporal workflow list --query 'CidKeyId=\"<key id>\"'`.",
    )
    key.add_argument("--key-type", required=True, choices=[k.value for k in KeyType])
    key.set_defaults(handler=_key_id)
