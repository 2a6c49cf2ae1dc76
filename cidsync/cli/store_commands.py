"""`cidsync store layout` and `cidsync store migrate`: the store's layout version, and moving it on.

Every role refuses to start on a layout its release does not read and names the command that migrates
it (`cidsync.store.layout_version`); these are that command and the look before it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cidsync.cli.options import add_settings_flags, run_async, settings_of


async def _layout(args: argparse.Namespace) -> int:
    from cidsync.redis_client import redis_client
    from cidsync.store.layout_version import LAYOUT_VERSION, READABLE_LAYOUTS, read_state, refusal

    redis = redis_client(settings_of(args).require("redis_url"))
    try:
        state = await read_state(redis)
    finally:
        await redis.aclose()
    why = None if state is None else refusal(state)
    if args.json:
        print(
            json.dumps(
                {
                    "version": None if state is None else state.version,
                    "migrating_to": None if state is None else state.migrating_to,
                    "release_writes": LAYOUT_VERSION,
                    "release_reads": sorted(READABLE_LAYOUTS),
                    "refused": why,
                }
            )
        )
    else:
        found = "no layout recorded yet (the first role to start records it)" if state is None else str(state)
        print(f"store: {found}")
        print(f"this release: writes layout version {LAYOUT_VERSION}, reads {sorted(READABLE_LAYOUTS)}")
        if why is not None:
            print(f"roles of this release refuse to start: {why}")
    return 0 if why is None else 1


async def _migrate(args: argparse.Namespace) -> int:
    from cidsync.redis_client import redis_client
    from cidsync.store.layout_version import Migrator

    def progress(looked_at: int, moved: int) -> None:
        print(f"  {looked_at} pairs looked at, {moved} moved", file=sys.stderr)

    redis = redis_client(settings_of(args).require("redis_url"))
    try:
        report = await Migrator(redis).run(args.to, progress)
    finally:
        await redis.aclose()
    print(
        f"store: {report.before} -> {report.after}; {report.moved} pairs moved "
        f"({report.pairs} looked at in the last pass)"
    )
    return 0


def register(commands: Any) -> None:
    store = commands.add_parser("store", help="the CID store's layout version, and migrating it")
    actions = store.add_subparsers(title="store commands", metavar="ACTION", dest="action", required=True)
    layout = actions.add_parser(
        "layout", help="the store's layout version and whether this release's roles would start on it (exit 1 if not)"
    )
    layout.add_argument("--json", action="store_true", help="one JSON object")
    add_settings_flags(layout, ["redis_url"])
    layout.set_defaults(handler=run_async(_layout))
    migrate = actions.add_parser(
        "migrate",
        help="move the store to the next layout version while the roles run (one pair at a time, each atomic); "
        "run again after an interruption",
    )
    migrate.add_argument("--to", type=int, required=True, metavar="VERSION", help="the layout version to move to")
    add_settings_flags(migrate, ["redis_url"])
    migrate.set_defaults(handler=run_async(_migrate))
