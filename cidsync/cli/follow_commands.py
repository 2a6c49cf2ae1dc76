"""`cidsync follow ensure|status`: the followers of DICT's CID event log (continuous verification).

`follow status` prints one line per running follower: its state, how far it is behind DICT's log, the
suspects in grace, the repairs it made and its last proof of sync; `--json` prints the followers'
`status` query answers as a JSON list. It reads them from Temporal (a visibility query and one query per
follower), so it needs no configuration beyond reaching Temporal.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cidsync.cli.reconcile_commands import temporal_flags, temporal_settings
from cidsync.devstack.spec import StackSpec
from cidsync.devstack.stack import StackState
from cidsync.entry import KeyType, PairRef, check_participant
from cidsync.errors import InvalidInput, Problem


def follow_settings(args: argparse.Namespace) -> dict[str, timedelta]:
    """The FollowInput settings the flags give (each follower adds its pair)."""
    problems = [Problem(f"--{name.replace('_', '-')}", "must be positive")
                for name in ("grace_seconds", "poll_seconds", "idle_seconds") if getattr(args, name) <= 0]  # fmt: skip
    if problems:
        raise InvalidInput("arguments", problems)
    return {
        "grace": timedelta(seconds=args.grace_seconds),
        "poll_interval": timedelta(seconds=args.poll_seconds),
        "idle_interval": timedelta(seconds=max(args.idle_seconds, args.poll_seconds)),
    }


def add_follow_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grace-seconds", type=float, default=120.0,
                        help="how long a CID may disagree with DICT before it is repaired (120)")  # fmt: skip
    parser.add_argument("--poll-seconds", type=float, default=15.0,
                        help="between reads of DICT's log while it has more; 15 keeps five key types within "
                        "DICT's 20 calls a minute per participant")  # fmt: skip
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the longest wait while the log is quiet")


async def _ensure(args: argparse.Namespace) -> int:
    from cidsync.config import parse_participants
    from cidsync.temporal_client import connect
    from starters.followers import ensure_followers

    settings = temporal_settings(args)
    participants = (
        parse_participants(args.participants, "--participants") if args.participants else settings.participants
    )
    if not participants:
        raise InvalidInput("arguments", [Problem("--participants", "none configured: set CIDSYNC_PARTICIPANTS or "
                                                 "pass --participants")])  # fmt: skip
    timing = follow_settings(args)
    pairs = [PairRef(participant=p, key_type=k) for p in participants for k in KeyType]
    client = await connect(settings, identity=f"cidsync-cli@{getpass.getuser()}")
    done = await ensure_followers(client, pairs, settings.task_queue, timing)
    print(json.dumps({"followers": done}))
    return 0


async def _status(args: argparse.Namespace) -> int:
    from cidsync.temporal_client import connect
    from starters.followers import age, follower_statuses

    client = await connect(temporal_settings(args), identity=f"cidsync-cli@{getpass.getuser()}")
    found = await follower_statuses(client)
    if args.json:
        print(json.dumps([{"workflow_id": wid, **(s.model_dump(mode="json") if not isinstance(s, str) else
                                                    {"error": s})} for wid, s in found]))  # fmt: skip
        return 0
    if not found:
        print("no follower is running (start them with `cidsync follow ensure` or `cidsync schedule ensure`)")
        return 0
    now = datetime.now(UTC)
    print(f"{'participant':<11} {'key type':<8} {'state':<16} {'behind':>8} {'suspects':>8} {'added':>6} "
          f"{'removed':>7} {'events':>8}  {'last poll':<12} {'last proof':<16} last formal OK")  # fmt: skip
    for workflow_id, status in found:
        if isinstance(status, str):
            print(f"{workflow_id}: {status}")
            continue
        proof = age(status.last_proof_at, now) + (f" ({status.last_proof_kind})" if status.last_proof_kind else "")
        print(f"{status.participant:<11} {status.key_type.value:<8} {status.state:<16} "
              f"{status.behind_seconds:>7.0f}s {status.pending:>8} {status.added:>6} {status.removed:>7} "
              f"{status.events:>8}  {age(status.last_poll_at, now):<12} "
              f"{proof:<16} "
              f"{age(status.last_formal_at, now)}")  # fmt: skip
        if status.last_hand_over:
            print(f"{'':<11} handed to ReconcileVSync: {status.last_hand_over}")
    return 0


async def ensure_stack_followers(
    spec: StackSpec,
    state: StackState,
    participants: Sequence[str] | None = None,
    key_types: Sequence[KeyType] = tuple(KeyType),
    **timing: float,
) -> dict[str, str]:
    """The followers of a dev stack: for `participants`, else the stack file's, else CIDSYNC_PARTICIPANTS
    (none: nothing started), each of `key_types`. `timing` overrides the stack file's grace_seconds,
    poll_seconds, idle_seconds (the demo's short ones)."""
    from cidsync.config import load_settings
    from cidsync.temporal_client import connect
    from starters.followers import ensure_followers

    settings = load_settings({}, dev_endpoints=state.endpoints())
    chosen = list(participants) if participants is not None else spec.follow.participants or settings.participants
    if not chosen or not spec.follow.enabled or not spec.worker.enabled:
        return {}
    follow = spec.follow.model_copy(update=timing)
    timings = argparse.Namespace(
        grace_seconds=follow.grace_seconds, poll_seconds=follow.poll_seconds, idle_seconds=follow.idle_seconds
    )
    pairs = [PairRef(participant=check_participant(p, field="follow.participants"), key_type=k)
             for p in chosen for k in key_types]  # fmt: skip
    client = await connect(settings, identity="cidsync-dev")
    return await ensure_followers(client, pairs, spec.worker.task_queue, follow_settings(timings))


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
    temporal_flags(ensure)
    ensure.set_defaults(handler=lambda args: asyncio.run(_ensure(args)))
    status = actions.add_parser("status", help="each running follower's state, lag, suspects and repairs")
    status.add_argument("--json", action="store_true", help="the followers' status as a JSON list")
    temporal_flags(status)
    status.set_defaults(handler=lambda args: asyncio.run(_status(args)))
