"""`cidsync reconcile ...` and `cidsync schedule ensure`: operators' entry points to ReconcileVSync.

`reconcile --wait` prints one JSON object (docs/design.md §7): `workflow_id`, `outcome` (OK, REPAIRED,
NEEDS_ATTENTION, FAILED), `added`, `removed`, `verifications`, and the rest of the run's counts. OK and
REPAIRED exit 0; NEEDS_ATTENTION and FAILED exit 1 with the reason on stderr, so a cron job notices.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import timedelta
from typing import Any

from cidsync.cli.options import (
    TEMPORAL,
    add_follow_flags,
    add_settings_flags,
    cli_identity,
    follow_timing_of,
    participant_flag,
    participants_of,
    run_async,
    settings_of,
)
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput, Problem


def _check(args: argparse.Namespace) -> None:
    problems = []
    if args.action:
        if not args.workflow_id:
            problems.append(Problem("WORKFLOW_ID", f"`reconcile {args.action}` needs the reconciliation's workflow id"))
    else:
        if not args.participant:
            problems.append(Problem("--participant", "is required (or: reconcile approve|reject WORKFLOW_ID)"))
        if not args.key_type:
            problems.append(Problem("--key-type", "is required"))
        if args.threshold is not None and args.threshold < 0:
            problems.append(Problem("--threshold", "must not be negative"))
        if args.grace is not None and not args.grace > 0:
            problems.append(Problem("--grace", "must be a positive number of seconds"))
    if problems:
        raise InvalidInput("arguments", problems)
    if args.participant:
        participant_flag(args.participant)


async def _reconcile(args: argparse.Namespace) -> int:
    _check(args)
    from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError

    from cidsync.temporal_client import connect
    from starters.reconciliation import start_reconciliation
    from workflows.policies import RECONCILIATION_FAILED
    from workflows.reconcile_vsync import Decision, ReconcileInput, ReconcileResult, ReconcileVSync

    settings = settings_of(args)
    client = await connect(settings, identity=cli_identity())
    if args.action == "progress":
        progress = await client.get_workflow_handle_for(ReconcileVSync.run, args.workflow_id).query(
            ReconcileVSync.progress
        )
        print(progress.model_dump_json())
        return 0
    if args.action:
        handle = client.get_workflow_handle_for(ReconcileVSync.run, args.workflow_id)
        decision = Decision(operator=args.operator or getpass.getuser(), reason=args.reason or "")
        update = ReconcileVSync.approve if args.action == "approve" else ReconcileVSync.reject
        try:
            print(await handle.execute_update(update, decision))
        except WorkflowUpdateFailedError as refused:
            print(f"cidsync: {args.workflow_id}: {refused.cause}", file=sys.stderr)
            return 1
        return 0

    values: dict[str, Any] = {"participant": args.participant, "key_type": KeyType(args.key_type), "trigger": "cli"}
    if args.threshold is not None:
        values["divergence_threshold"] = args.threshold
    if args.grace is not None:
        values["grace"] = timedelta(seconds=args.grace)
    handle = await start_reconciliation(client, ReconcileInput(**values), settings.task_queue)
    if not args.wait:
        print(json.dumps({"workflow_id": handle.id, "run_id": handle.result_run_id}))
        return 0
    try:
        result: ReconcileResult = await handle.result()
    except WorkflowFailureError as failure:
        cause = failure.cause
        if isinstance(cause, ApplicationError) and cause.type == RECONCILIATION_FAILED and cause.details:
            print(json.dumps(cause.details[0]))
            print(f"cidsync: {cause.message}", file=sys.stderr)
        else:
            print(json.dumps({"workflow_id": handle.id, "outcome": "FAILED", "reason": str(cause)}))
            print(f"cidsync: reconciliation {handle.id} failed: {cause}", file=sys.stderr)
        return 1
    print(result.model_dump_json())
    if result.outcome.value in ("OK", "REPAIRED"):
        return 0
    print(f"cidsync: reconciliation {handle.id} ended {result.outcome.value}: {result.reason}", file=sys.stderr)
    return 1


async def _schedule_ensure(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if not (0 <= args.hour <= 23 and 0 <= args.minute <= 59):
        raise InvalidInput("arguments", [Problem("--hour/--minute", "a time of day: hour 0-23, minute 0-59")])
    participants = participants_of(args, settings)
    _check_time_zone(args.time_zone)
    timing = {} if args.no_follow else follow_timing_of(args)

    from cidsync.temporal_client import connect
    from starters.schedules import ScheduleConfig, ensure_schedules

    config = ScheduleConfig(
        participants=participants,
        hour=args.hour,
        minute=args.minute,
        time_zone=args.time_zone,
        catchup_window=timedelta(hours=args.catchup_hours),
        divergence_threshold=args.threshold,
    )
    client = await connect(settings, identity=cli_identity())
    added: list[str] = []
    if not args.no_search_attributes:
        from temporalio.service import RPCError

        from cidsync.naming import search_attribute_types
        from starters.search_attributes import ensure_search_attributes

        try:
            added = await ensure_search_attributes(client)
        except RPCError as error:
            wanted = ", ".join(f"{name}:{kind}" for name, kind in search_attribute_types().items())
            print(
                f"cidsync: could not register the search attributes ({error.status.name}: {error.message}). "
                f"Create them with an admin's rights ({wanted}; on Temporal Cloud with tcld or the UI), then "
                "run again with --no-search-attributes",
                file=sys.stderr,
            )
            return 1
    done = await ensure_schedules(client, config, settings.task_queue)
    followers: dict[str, str] = {}
    if not args.no_follow:
        from starters.followers import ensure_followers

        followers = await ensure_followers(client, config.pairs, settings.task_queue, timing)
    print(
        json.dumps(
            {
                "search_attributes_added": added,
                "schedules": done,
                "pairs": len(config.pairs),
                "time": f"{args.hour:02d}:{args.minute:02d}",
                "time_zone": args.time_zone,
                "followers": followers,
            }
        )
    )
    return 0


def _check_time_zone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("arguments", [Problem("--time-zone", f"unknown time zone {name!r}")]) from None


def register(commands: Any) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="verify a (participant, key type) with DICT and repair it on NOK; or approve/reject a pending repair",
        description="Starts ReconcileVSync, or joins the one running for the pair. "
        "`reconcile approve|reject WORKFLOW_ID` answers a reconciliation waiting for an operator; "
        "`reconcile progress WORKFLOW_ID` prints where a run is (its `progress` query) as JSON.",
    )
    reconcile.add_argument("action", nargs="?", choices=["approve", "reject", "progress"])
    reconcile.add_argument("workflow_id", nargs="?", metavar="WORKFLOW_ID")
    reconcile.add_argument("--participant", metavar="ISPB")
    reconcile.add_argument("--key-type", choices=[k.value for k in KeyType])
    reconcile.add_argument("--wait", action="store_true", help="wait for the outcome and print it as JSON")
    reconcile.add_argument("--threshold", type=int, help="divergence above which an operator must approve (100)")
    reconcile.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="how long a change may be in flight before a difference counts as divergence "
        "(120: longer than core's pipeline and DICT's log take)",
    )
    reconcile.add_argument("--operator", help="who decides (approve/reject; default: the OS user)")
    reconcile.add_argument("--reason", help="why (approve/reject)")
    add_settings_flags(reconcile, TEMPORAL)
    reconcile.set_defaults(handler=run_async(_reconcile))

    schedule = commands.add_parser("schedule", help="the Temporal Schedules of the daily verification")
    actions = schedule.add_subparsers(title="actions", metavar="ACTION", required=True)
    ensure = actions.add_parser(
        "ensure",
        help="create or update the daily verification and the 36 h alert, and "
        "start the followers of DICT's CID event log",
    )
    ensure.add_argument("--participants", metavar="ISPB,...", help="default: CIDSYNC_PARTICIPANTS")
    ensure.add_argument("--hour", type=int, default=3)
    ensure.add_argument("--minute", type=int, default=0)
    ensure.add_argument("--time-zone", default="America/Sao_Paulo")
    ensure.add_argument("--catchup-hours", type=float, default=12.0, help="how late a missed run may still run")
    ensure.add_argument("--threshold", type=int, default=100, help="divergence needing an operator's approval")
    ensure.add_argument(
        "--no-follow", action="store_true", help="do not start the followers of DICT's CID event log (`cidsync follow`)"
    )
    ensure.add_argument(
        "--no-search-attributes",
        action="store_true",
        help="do not register cidsync's search attributes first (Temporal Cloud: created with tcld or the UI)",
    )
    add_follow_flags(ensure)
    add_settings_flags(ensure, TEMPORAL)
    ensure.set_defaults(handler=run_async(_schedule_ensure))
