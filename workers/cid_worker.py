"""The cidsync worker: registers the workflows and activities and owns their clients' lifecycle.

Clients are built once here and injected into the activity classes (docs/development.md): the CID store (Redis) for
ingestion and reconciliation's scratch sets, the Bridge for DICT, and a Pulsar producer for `core-events`.

Shutdown order (docs/stack.md): stop polling and let in-flight activities finish within the graceful timeout,
then close the clients the activities used (Pulsar producer and client, Bridge channel, Redis). The
Temporal client needs no close.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.bridge import BridgeActivities
from activities.cid_file import CIDFileActivities
from activities.cid_store import StoreActivities
from activities.core_events import CoreEventsPublisher
from activities.follow import FollowActivities
from activities.proof import ProofActivities
from activities.repair import RepairActivities
from cidsync.bridge.budget import DictBudget, parse_budgets
from cidsync.bridge.client import BridgeClient, ClientTls
from cidsync.config import ROLE_CONNECT_WAIT, Settings
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.telemetry.endpoint import Health
from cidsync.topics import Topics
from workers.deployment import make_current
from workers.options import WorkerOptions
from workers.pair_state import refresh_pair_states
from workflows.apply_cid_batch import ApplyCIDBatch
from workflows.check_freshness import CheckVerificationFreshness
from workflows.create_cid import CreateCID
from workflows.delete_cid import DeleteCID
from workflows.follow_cid_events import FollowCIDEvents
from workflows.reconcile_vsync import ReconcileVSync
from workflows.update_cid import UpdateCID
from workflows.verify_all import VerifyAllPairs

logger = logging.getLogger(__name__)

INGESTION_WORKFLOWS = [CreateCID, UpdateCID, DeleteCID, ApplyCIDBatch]
RECONCILIATION_WORKFLOWS = [ReconcileVSync, VerifyAllPairs, CheckVerificationFreshness, FollowCIDEvents]


FOLLOWER_RESERVE = 20.0  # tokens of each of DICT's participant buckets a follower's poll may not spend


@dataclass(frozen=True)
class Reconciliation:
    """The activities reconciliation needs besides the store's: DICT, the CID files, repairs, core, and
    the event-log follower's look at DICT."""

    bridge: BridgeActivities
    cid_files: CIDFileActivities
    repair: RepairActivities
    core_events: CoreEventsPublisher
    follow: FollowActivities
    proof: ProofActivities

    @classmethod
    def of(cls, store: CIDStore, bridge: BridgeClient, core_events: CoreEventsPublisher) -> Reconciliation:
        # A follower's routine reads leave the last of each of DICT's buckets to reconciliations and proofs.
        routine = bridge.reserving(FOLLOWER_RESERVE)
        return cls(
            BridgeActivities(bridge),
            CIDFileActivities(store, bridge),
            RepairActivities(store, bridge),
            core_events,
            FollowActivities(store, routine),
            ProofActivities(store, bridge),
        )


def activities_of(store: StoreActivities, reconciliation: Reconciliation | None = None) -> list[Callable[..., Any]]:
    found: list[Callable[..., Any]] = [store.apply_change, store.key_sequence, store.apply_batch]
    if reconciliation is not None:
        r = reconciliation
        found += [
            store.local_vsync,
            store.begin_watch,
            store.end_watch,
            store.record_verification,
            store.last_verifications,
            r.bridge.verify_sync,
            r.bridge.create_cid_set_file,
            r.bridge.get_cid_set_file,
            r.cid_files.stream_cid_file,
            r.cid_files.diff,
            r.cid_files.roll_forward,
            r.cid_files.judge,
            r.proof.prove_sync,
            r.proof.confirm_landed,
            r.cid_files.drop_scratch,
            r.repair.repair_cids,
            r.repair.repair_suspects,
            r.follow.poll_cid_events,
            r.core_events.publish_outbox,
            r.core_events.publish_notice,
        ]
    return found


def build_worker(
    client: Client,
    store: CIDStore,
    task_queue: str,
    options: WorkerOptions,
    deployment: WorkerDeploymentVersion,
    reconciliation: Reconciliation | None = None,
) -> Worker:
    """Ingestion only when `reconciliation` is None (tests of the ingestion path need nothing more).

    Always a versioned worker (Worker Versioning): each workflow type declares its versioning behaviour
    (`workflows/versioning.py` says which and why), and Temporal refuses such a workflow's task from an
    unversioned worker. It gets tasks once its version is the deployment's current (or ramping) one."""
    workflows = INGESTION_WORKFLOWS + (RECONCILIATION_WORKFLOWS if reconciliation else [])
    # The Worker loads each workflow module in the sandbox to validate it. On Python 3.11 a garbage cycle
    # whose finalizer imports `warnings` (a never-awaited coroutine), collected during that load, re-enters
    # CPython's module lock and fails validation with "KeyError: <thread id>" (sdk-python #585, fix not
    # released: #1833; CPython fixed its side in 3.12). Seen once in the suite, at a test's worker start.
    # Collecting pending garbage first, outside the sandbox, removes that trigger.
    gc.collect()
    return Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=activities_of(StoreActivities(store), reconciliation),
        max_concurrent_activities=options.max_concurrent_activities,
        max_concurrent_workflow_tasks=options.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=options.graceful_shutdown,
        deployment_config=WorkerDeploymentConfig(version=deployment, use_worker_versioning=True),
    )


def deployment_of(settings: Settings) -> WorkerDeploymentVersion:
    return WorkerDeploymentVersion(deployment_name=settings.deployment_name, build_id=settings.build_id)


async def run_worker(
    client: Client, settings: Settings, options: WorkerOptions, stop: asyncio.Event, health: Health | None = None
) -> None:
    """Run until `stop` is set, then shut down gracefully. `health` gets a probe per dependency."""
    key_secret = settings.role_key_secret()
    redis = redis_client(settings.require("redis_url"))
    store = CIDStore(redis, key_secret, mark_ttl_seconds=settings.mark_ttl_seconds)
    budget = None if settings.dict_budgets == "off" else DictBudget(redis, parse_budgets(settings.dict_budgets))
    bridge = BridgeClient(settings.require("bridge_address"), tls=ClientTls.from_env(), budget=budget)
    pulsar = pulsar_client(settings.require("pulsar_url"))
    freshness: asyncio.Future[None] | None = None
    try:
        await store.check(wait=ROLE_CONNECT_WAIT, stop=stop)
        publisher = await CoreEventsPublisher.create(store, pulsar, Topics(namespace=settings.pulsar_namespace))
        deployment = deployment_of(settings)
        worker = build_worker(
            client, store, settings.task_queue, options, deployment, Reconciliation.of(store, bridge, publisher)
        )
        if health is not None:
            health.add("temporal", client.service_client.check_health)
            health.add("redis", store.ping)
            health.add("pulsar", publisher.check_connected)
            # Ingestion runs without DICT; only reconciliation needs it, and it retries: reported, not required.
            health.add("bridge", bridge.check_connected, required=False)
            freshness = asyncio.ensure_future(refresh_pair_states(store, client, settings.participants))
        # What is alive now (the SDK, the sandbox's validated modules, the clients: ~500,000 objects) lives
        # as long as the process. Left in the collector's oldest generation it sets the pace of full
        # collections (one when that generation has grown by a quarter), so finished ApplyCIDBatch runs, held
        # in reference cycles with their batches, piled up to 20 at a time and raised the peak RSS past 200 MB
        # in `make bench`. Frozen, it is never scanned again and full collections come soon enough
        # (bench/RESULTS.md, "gc.freeze()").
        gc.freeze()
        async with worker:
            logger.info(
                "worker polling task queue %s as %s/%s",
                settings.task_queue,
                deployment.deployment_name,
                deployment.build_id,
            )
            # A first deployment routes to its first version; a version that is current already gets this
            # task queue routed too. An upgrade is a deploy's explicit step (or --make-current).
            await make_current(
                client,
                deployment,
                task_queues=[settings.task_queue],
                identity=client.identity,
                unless_another_is_current=not options.make_current,
            )
            await stop.wait()
            logger.info("shutting down: finishing in-flight activities (up to %s)", options.graceful_shutdown)
        await publisher.close()
    finally:
        if freshness is not None:
            freshness.cancel()
        await pulsar.close()
        await bridge.close()
        await store.close()
