"""The starter: entry events from Pulsar become Temporal workflow starts (docs/design.md §2, §3, §4).

This module wires the parts to the real services and runs them:
- `starters.receive_loop`: one loop per entry topic; each message parsed into its minimal change (the
  entry, with its personal data, goes no further than this process's memory) or dead-lettered at once;
- `starters.per_event` and `starters.batches`: the two dispatchers (mark looked up, run started under a
  deterministic id, ack only once Temporal has it), bounded by `max_in_flight` / `batches_in_flight`;
- `starters.settling` with `starters.redelivery`: ack, redelivery after a doubling backoff, dead letter
  after `max_redeliveries`, or a halt on a refusal no retry can fix;
- `starters.workflow_starts`: the calls to Temporal.

Here: the checks before consuming (search attributes, the key secret), one consumer per entry topic, the
dead-letter producer, readiness, the counters in the log, and closing in order on stop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import timedelta

import pulsar
import pulsar.asyncio as pulsar_asyncio
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from cidsync.config import ROLE_CONNECT_WAIT, Settings
from cidsync.naming import SEARCH_ATTRIBUTES, search_attribute_types
from cidsync.pulsar_client import pulsar_client
from cidsync.pulsar_native import BatchConsumer
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.telemetry.endpoint import Health
from cidsync.topics import Topics
from starters.options import StarterConfig
from starters.receive_loop import ReceiveLoop, StarterHalted
from starters.redelivery import RedeliveryPolicy
from starters.settling import Settler, StarterStats
from starters.workflow_starts import WorkflowStarts

__all__ = ["EntryEventStarter", "StarterHalted", "StarterStats", "run_starter"]

logger = logging.getLogger(__name__)


class EntryEventStarter:
    def __init__(
        self,
        temporal: Client,
        store: CIDStore,
        pulsar_client: pulsar_asyncio.Client,
        topics: Topics,
        config: StarterConfig,
    ) -> None:
        self.temporal = temporal
        self.store = store
        self.pulsar = pulsar_client
        self.topics = topics
        self.config = config
        self.stats = StarterStats()
        self._receivers: dict[str, BatchConsumer] = {}  # by full topic name

    async def check_search_attributes(self) -> None:
        """Fail at start, with the fix, when the namespace lacks our search attributes."""
        reply = await self.temporal.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.temporal.namespace)
        )
        missing = [key.name for key in SEARCH_ATTRIBUTES if key.name not in reply.custom_attributes]
        if missing:
            types = search_attribute_types()
            commands = "; ".join(
                f"temporal operator search-attribute create --name {n} --type {types[n]}" for n in missing
            )
            raise StarterHalted(
                f"namespace {self.temporal.namespace} lacks the search attributes {', '.join(missing)}: {commands}"
            )

    async def check_connected(self) -> None:
        """Readiness: subscribed to every entry topic, each with a live connection to the broker."""
        down = [topic for topic, receiver in self._receivers.items() if not receiver.connected()]
        if not self._receivers or down:
            raise ConnectionError(f"not consuming from {', '.join(down) or 'the entry topics yet'}")

    async def log_stats(self, every: timedelta) -> None:
        """The counters in the log every `every`, so an operator without a scraper still sees progress."""
        while True:
            await asyncio.sleep(every.total_seconds())
            logger.info("starter counters: %s", self.stats.line(), extra={"counters": asdict(self.stats)})

    async def run(self, stop: asyncio.Event, *, connect_wait: timedelta = ROLE_CONNECT_WAIT) -> None:
        """Consume until `stop` is set, then drain: finish what is in flight, leave the rest unacked."""
        await self.check_search_attributes()
        await self.store.check(wait=connect_wait, stop=stop)
        dead_letters = await self.pulsar.create_producer(self.topics.dead_letter_topic, batching_enabled=False)
        try:
            await self._subscribe()
            policy = RedeliveryPolicy(
                self.config.max_redeliveries, self.config.backoff_base, self.config.backoff_max, self.config.halt_after
            )
            settler = Settler(self._receivers, dead_letters, policy, self.stats, nack_delay=self.config.nack_delay)
            starts = WorkflowStarts(self.temporal, self.config, self.stats)
            loop = ReceiveLoop(
                self._receivers, settler, self.store.ingestion, starts, self.store.key_secret, self.config
            )
            await loop.run(stop)
        finally:
            for receiver in self._receivers.values():
                await receiver.close()  # unacked messages go back to the broker
            await dead_letters.flush()
            await dead_letters.close()

    async def _subscribe(self) -> None:
        kind = pulsar.ConsumerType.KeyShared if self.config.key_shared else pulsar.ConsumerType.Shared
        # One consumer per topic, not one over all four: pulsar-lite's multi-topic consumer stalled a topic
        # (nothing more dispatched, nothing logged) in 7 of 39 drains of a fast-published backlog, and one
        # consumer per topic in none of 15 (issue 11's note has the reproduction).
        for topic in self.topics.entry_topics():
            consumer = await self.pulsar.subscribe(
                topic,
                self.config.subscription,
                consumer_type=kind,
                initial_position=pulsar.InitialPosition.Earliest,
                receiver_queue_size=max(1000, 2 * self.config.receive_max_messages),
                negative_ack_redelivery_delay_ms=int(self.config.nack_delay.total_seconds() * 1000),
                batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(
                    self.config.receive_max_messages, -1, int(self.config.receive_wait.total_seconds() * 1000)
                ),
            )
            self._receivers[topic] = BatchConsumer(consumer)


async def run_starter(
    temporal: Client, settings: Settings, config: StarterConfig, stop: asyncio.Event, health: Health | None = None
) -> StarterStats:
    """Run until `stop` is set, then drain. Builds the clients it needs and closes them in order (docs/stack.md):
    the Pulsar consumer and client first, then the store. `health` gets a probe per dependency."""
    store = CIDStore(redis_client(settings.require("redis_url")), settings.role_key_secret())
    pulsar = pulsar_client(settings.require("pulsar_url"))
    starter = EntryEventStarter(temporal, store, pulsar, Topics(namespace=settings.pulsar_namespace), config)
    if health is not None:
        health.add("temporal", temporal.service_client.check_health)
        health.add("redis", store.ping)
        health.add("pulsar", starter.check_connected)
    logging_stats = asyncio.ensure_future(starter.log_stats(config.log_stats_every))
    try:
        await starter.run(stop)
    finally:
        logging_stats.cancel()
        await pulsar.close()
        await store.close()
    logger.info("starter stopped: %s", starter.stats.line(), extra={"counters": asdict(starter.stats)})
    return starter.stats
