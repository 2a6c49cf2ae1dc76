"""`cidsync follow ensure|status`: the followers of DICT's CID event log (continuous verification).

`follow status` prints one line per running follower: its state, how far it is behind DICT's log, the
suspects in grace, the repairs it made and its last proof of sync; `--json` prints the followers'
`status` query answers as a JSON list. It reads them from Temporal (a visibility query and one query per
follower), so it needs no configuration beyond reaching Temporal.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from cidsync.cli.options import (
    TEMPORAL,
    add_follow_flags,
    add_settings_flags,
    cli_identity,
    follow_timing_of,
    participants_of,
    run_async,
    settings_of,
)
from cidsync.entry import KeyType, PairRef


async def _ensure(args: argparse.Namespace) -> int:
    from cidsync.temporal_client import connect
    from starters.followers import ensure_followers

    settings = settings_of(args)
    participants = participants_of(args, settings)
    timing = follow_timing_of(args)
    pairs = [PairRef(participant=p, key_type=k) for p in participants for k in KeyType]
    client = await connect(settings, identity=cli_identity())
    done = await ensure_followers(client, pairs, settings.task_queue, timing)
    print(json.dumps({"followers": done}))
    return 0


async def _status(args: argparse.Namespace) -> int:
    from cidsync.temporal_client import connect
    from starters.followers import age, follower_statuses

    client = await connect(settings_of(args), identity=cli_identity())
    found = await follower_statuses(client)
    if args.json:
        print(
            json.dumps(
                [
                    {"workflow_id": wid, **(s.model_dump(mode="json") if not isinstance(s, str) else {"error": s})}
                    for wid, s in found
                ]
            )
        )
        return 0
    if not found:
        print("no follower is running (start them with `cidsync follow ensure` or `cidsync schedule ensure`)")
        return 0
    now = datetime.now(UTC)
    print(
        f"{'participant':<11} {'key type':<8} {'state':<16} {'behind':>8} {'suspects':>8} {'added':>6} "
        f"{'removed':>7} {'events':>8}  {'last poll':<12} {'last proof':<16} last formal OK"
    )
    for workflow_id, status in found:
        if isinstance(status, str):
            print(f"{workflow_id}: {status}")
            continue
        proof = age(status.last_proof_at, now) + (f" ({status.last_proof_kind})" if status.last_proof_kind else "")
        print(
            f"{status.participant:<11} {status.key_type.value:<8} {status.state:<16} "
            f"{status.behind_seconds:>7.0f}s {status.pending:>8} {status.added:>6} {status.removed:>7} "
            f"{status.events:>8}  {age(status.last_poll_at, now):<12} "
            f"{proof:<16} "
            f"{age(status.last_formal_at, now)}"
        )
        if status.last_hand_over:
            print(f"{'':<11} handed to ReconcileVSync: {status.last_hand_over}")
    return 0


def register(commands: Any) -> None:
    follow = commands.add_parser(
        "follow",
        help="the followers of DICT's CID event log: continuous verification between the daily ones",
        description="One FollowCidEvents per (participant, key type) reads DICT's CID event log and repairs "
        "a CID DICT and the local set disagree on once its grace period is over, without a CID file.",
    )
    actions = follow.add_subparsers(title="actions", metavar="ACTION", required=True)
    ensure = actions.add_parser("ensure", help="start a follower for every configured pair (running ones are kept)")
    ensure.add_argument("--participants", metavar="ISPB,...", help="default: CIDSYNC_PARTICIPANTS")
    add_follow_flags(ensure)
    add_settings_flags(ensure, TEMPORAL)
    ensure.set_defaults(handler=run_async(_ensure))
    status = actions.add_parser("status", help="each running follower's state, lag, suspects and repairs")
    status.add_argument("--json", action="store_true", help="the followers' status as a JSON list")
    add_settings_flags(status, TEMPORAL)
    status.set_defaults(handler=run_async(_status))
