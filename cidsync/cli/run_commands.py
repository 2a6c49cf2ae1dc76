"""`cidsync worker`, `cidsync starter` and `cidsync vsync`: the long-running roles and the store view.

Each role runs until SIGTERM or SIGINT, then drains and shuts down in order (docs/stack.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from datetime import timedelta
from typing import Any

from cidsync.cli.options import PULSAR, TEMPORAL, add_settings_flags, run_async, settings_of, stop_on_signals
from cidsync.config import ROLE_CONNECT_WAIT
from cidsync.entry import KeyType
from cidsync.telemetry.logs import configure_logging
from starters.options import Mode, StarterConfig
from workers.options import WorkerOptions


def identity(role: str, task_queue: str) -> str:
    """Unique per process, so replicas can be told apart in the Web UI and in `temporal task-queue describe`."""
    return f"{role}/{task_queue}/{os.getpid()}@{socket.gethostname()}"


def _announce(role: str, url: str | None) -> None:
    if url is not None:
        logging.getLogger(__name__).info(
            "%s: metrics on %s/metrics, health on %s/healthz and %s/readyz", role, url, url, url
        )


async def _worker(args: argparse.Namespace) -> int:
    from cidsync.telemetry.endpoint import serving
    from cidsync.temporal_client import connect
    from workers.cid_worker import run_worker

    configure_logging(args.log_level)
    settings = settings_of(args)
    settings.role_key_secret()  # before any wait for a dependency: a missing secret is no transient
    options = WorkerOptions(
        max_concurrent_activities=args.max_concurrent_activities,
        max_concurrent_workflow_tasks=args.max_concurrent_workflow_tasks,
        graceful_shutdown=timedelta(seconds=args.graceful_shutdown_seconds),
        make_current=args.make_current,
    )
    stop = stop_on_signals()
    async with serving("cidsync-worker", settings.metrics_bind) as observed:
        _announce("worker", observed.url)
        client = await connect(
            settings,
            identity=identity("cidsync-worker", settings.task_queue),
            runtime=observed.runtime,
            wait=ROLE_CONNECT_WAIT,
            stop=stop,
        )
        await run_worker(client, settings, options, stop, observed.health)
    return 0


async def _starter(args: argparse.Namespace) -> int:
    from cidsync.telemetry.endpoint import serving
    from cidsync.temporal_client import connect
    from starters.entry_events import StarterHalted, run_starter

    configure_logging(args.log_level)
    settings = settings_of(args)
    settings.role_key_secret()  # before any wait for a dependency: a missing secret is no transient
    stop = stop_on_signals()
    config = StarterConfig(
        task_queue=settings.task_queue,
        subscription=args.subscription,
        key_shared=args.subscription_type == "key_shared",
        max_in_flight=args.max_in_flight,
        max_redeliveries=args.max_redeliveries,
        waiting_period=timedelta(days=settings.waiting_period_days),
        mode=Mode(args.mode),
        batch_max_events=args.batch_max_events,
        batch_max_wait=timedelta(milliseconds=args.batch_max_wait_ms),
        batches_in_flight=args.batches_in_flight,
        receive_max_messages=args.receive_max_messages,
        receive_wait=timedelta(milliseconds=args.receive_wait_ms),
        log_stats_every=timedelta(seconds=args.log_stats_every_s),
        nack_delay=timedelta(seconds=args.nack_delay_s),
        halt_after=timedelta(seconds=args.halt_after_s),
    )
    async with serving("cidsync-starter", settings.metrics_bind) as observed:
        _announce("starter", observed.url)
        temporal = await connect(
            settings,
            identity=identity("cidsync-starter", settings.task_queue),
            runtime=observed.runtime,
            wait=ROLE_CONNECT_WAIT,
            stop=stop,
        )
        try:
            await run_starter(temporal, settings, config, stop, observed.health)
        except StarterHalted as halted:
            logging.getLogger(__name__).error("%s", halted)
            print(f"cidsync: {halted}", file=sys.stderr)
            return 1
    return 0


async def _vsync(args: argparse.Namespace) -> int:
    from cidsync.redis_client import redis_client
    from cidsync.store.cid_store import CIDStore

    settings = settings_of(args)
    store = CIDStore(redis_client(settings.require("redis_url")), settings.key_secret_bytes)
    try:
        pairs = [
            (p, k)
            for p, k in await store.view.pairs()
            if args.participant in (None, p) and args.key_type in (None, k.value)
        ]
        rows = [
            {
                "participant": p,
                "key_type": k.value,
                "count": await store.view.count(p, k),
                "vsync": await store.view.vsync(p, k),
            }
            for p, k in pairs
        ]
    finally:
        await store.close()
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'participant':<11} {'key type':<8} {'count':>8}  vsync")
        for row in rows:
            print(f"{row['participant']:<11} {row['key_type']:<8} {row['count']:>8}  {row['vsync']}")
    return 0


def register(commands: Any) -> None:
    worker = commands.add_parser("worker", help="run the Temporal worker (workflows and activities)")
    add_settings_flags(
        worker,
        [*TEMPORAL, *PULSAR, "redis_url", "bridge_address", "metrics_bind", "deployment_name", "build_id"],
    )
    defaults = WorkerOptions()
    worker.add_argument("--max-concurrent-activities", type=int, default=defaults.max_concurrent_activities)
    worker.add_argument(
        "--max-concurrent-workflow-tasks",
        type=int,
        default=defaults.max_concurrent_workflow_tasks,
        help="workflow tasks at once (each holds its batch in memory while it runs)",
    )
    worker.add_argument(
        "--graceful-shutdown-seconds",
        type=float,
        default=defaults.graceful_shutdown.total_seconds(),
        help="how long in-flight activities may finish after SIGTERM",
    )
    worker.add_argument(
        "--make-current",
        action="store_true",
        help="make this worker's deployment version the current one once it polls (what a deploy step does with "
        "`temporal worker deployment set-current-version`)",
    )
    worker.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(handler=run_async(_worker))

    starter = commands.add_parser("starter", help="run the starter bridge: entry events from Pulsar to workflows")
    add_settings_flags(starter, [*TEMPORAL, *PULSAR, "redis_url", "metrics_bind"])
    config = StarterConfig()
    starter.add_argument("--subscription", default=config.subscription)
    starter.add_argument(
        "--subscription-type", default="key_shared" if config.key_shared else "shared", choices=["key_shared", "shared"]
    )
    starter.add_argument("--max-in-flight", type=int, default=config.max_in_flight)
    starter.add_argument(
        "--max-redeliveries", type=int, default=config.max_redeliveries, help="then the message is dead-lettered"
    )
    starter.add_argument(
        "--nack-delay-s",
        type=float,
        default=config.nack_delay.total_seconds(),
        help="a failed message comes back this long after its backoff (Pulsar's negative-ack redelivery delay)",
    )
    starter.add_argument(
        "--halt-after-s",
        type=float,
        default=config.halt_after.total_seconds(),
        help="halt once Temporal has refused every start this long (a missing namespace, an unknown search "
        "attribute); shorter refusals, as from a Temporal just restarted, are redelivered",
    )
    starter.add_argument(
        "--mode",
        default=config.mode.value,
        choices=[m.value for m in Mode],
        help="batch: many events per ApplyCIDBatch run, for throughput",
    )
    starter.add_argument("--batch-max-events", type=int, default=config.batch_max_events)
    starter.add_argument("--batch-max-wait-ms", type=int, default=int(config.batch_max_wait.total_seconds() * 1000))
    starter.add_argument(
        "--batches-in-flight", type=int, default=config.batches_in_flight, help="batch starts under way at once"
    )
    starter.add_argument(
        "--receive-max-messages", type=int, default=config.receive_max_messages, help="messages handed over per receive"
    )
    starter.add_argument(
        "--receive-wait-ms",
        type=int,
        default=int(config.receive_wait.total_seconds() * 1000),
        help="how long a receive waits for more (the added latency when traffic is low)",
    )
    starter.add_argument(
        "--log-stats-every-s",
        type=float,
        default=config.log_stats_every.total_seconds(),
        help="log the counters this often",
    )
    starter.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    starter.set_defaults(handler=run_async(_starter))

    vsync = commands.add_parser("vsync", help="print the local VSync and count of each (participant, key type)")
    vsync.add_argument("--participant", metavar="ISPB")
    vsync.add_argument("--key-type", choices=[k.value for k in KeyType])
    vsync.add_argument(
        "--json", action="store_true", help='a JSON list of {"participant", "key_type", "count", "vsync"}'
    )
    add_settings_flags(vsync, ["redis_url"])
    vsync.set_defaults(handler=run_async(_vsync))
