"""Helpers for the producer's tests: unique topics, a consumer, and a broker a test may stop."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pulsar
import pulsar.asyncio as pulsar_asyncio
import pytest

from cidsync.pulsar_client import pulsar_client
from cidsync.topics import Topics
from cidsync_tooling.devstack.processes import Launched, free_port
from cidsync_tooling.devstack.servers import start_pulsar
from tests.helpers.servers import PulsarBroker


def unique_topics() -> Topics:
    """The contract's topic names with a suffix of this test's own, so tests never see each other."""
    return Topics().suffixed(uuid.uuid4().hex[:12])


async def subscribe(client: pulsar_asyncio.Client, topics: list[str]) -> pulsar_asyncio.Consumer:
    return await client.subscribe(
        topics,
        f"test-{uuid.uuid4()}",
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
    )


RECEIVE_TIMEOUT = 15.0


async def receive(consumer: pulsar_asyncio.Consumer) -> pulsar.Message:
    """The next message, acknowledged; fails the test if none comes within RECEIVE_TIMEOUT."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        message = await consumer.receive()
    await consumer.acknowledge(message)
    return message


@pytest.fixture
async def reader_client(pulsar_broker: PulsarBroker) -> AsyncIterator[pulsar_asyncio.Client]:
    client = pulsar_client(pulsar_broker.url)
    try:
        yield client
    finally:
        await client.close()


@dataclass
class StoppableBroker:
    """A broker of one test's own, stopped and restarted on the same port and data."""

    port: int
    metrics_port: int
    data_dir: Path
    launched: list[Launched] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launched.append(
            start_pulsar(
                port=self.port, metrics_port=self.metrics_port, data_dir=self.data_dir, log=self.data_dir / "pulsar.log"
            )
        )

    def stop(self) -> None:
        while self.launched:
            self.launched.pop().stop()


@pytest.fixture
def stoppable_broker(tmp_path: Path) -> Iterator[StoppableBroker]:
    broker = StoppableBroker(free_port(), free_port(), tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
